"""Export: quantization, the artifact container, code-size accounting and the size limit."""
