"""One self-contained `train_gpt.py` for a preset, counted as the records count code (frontier-spec F8.1).

The files of the preset's import closure (`pgolf.export.trace`) are minified
(python-minifier: docstrings out; names, annotations and asserts kept, since torch.library
reads annotations and Triton reads kernel sources), put with the preset's TOML into a
small program that writes them to a temporary directory and runs the trainer from there,
and that program is brotli-11 compressed and base85-encoded into the records' two-line
exec wrapper:

    import brotli,base64
    exec(brotli.decompress(base64.b85decode("...")))

Files go to disk, not to an in-memory importer, because Triton compiles kernels from
their source files and the config loader reads presets next to its module. Counted code
bytes are the size of that script. Arguments are config overrides (`key=value`; the
challenge's environment variables apply as in `pgolf train`); it runs under torchrun too.
`train_gpt.py eval ARTIFACT [data=... tokenizer=... stride=N batch_tokens=N device=cpu]` scores an
artifact file instead (as `pgolf eval` does), which is how a submission's total is verified.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass

import brotli

from pgolf.config import preset_files, preset_path
from pgolf.errors import PgolfError
from pgolf.export.trace import Closure, archive_name, import_closure

WRAPPER_HEAD = "import brotli,base64\n"

_BOOTSTRAP = """import atexit,os,shutil,sys,tempfile
F={files!r}
P={preset!r}
d=tempfile.mkdtemp(prefix='pgolf-')
atexit.register(shutil.rmtree,d,True)
for n,s in F.items():
 p=os.path.join(d,n);os.makedirs(os.path.dirname(p),exist_ok=True)
 with open(p,'w',encoding='utf-8') as f:f.write(s)
sys.path.insert(0,d)
from pgolf.config import load_config
from pgolf.errors import PgolfError
a=sys.argv[1:]
try:
 if a[:1]==['eval']:
  import json;from pgolf.eval.scoring import score_artifact
  k=dict(x.split('=',1) for x in a[2:])
  for n in('seq_len','stride','batch_tokens'):
   if n in k:k[n]=int(k[n])
  r=score_artifact(a[1],**k)
  if r:print('eval '+json.dumps(r))
  sys.exit(0)
 from pgolf.train.trainer import run_training
 r=run_training(load_config(P,a),preset=P)
except PgolfError as e:print(f'train_gpt.py: error: {{e}}',file=sys.stderr);sys.exit(2)
if r.is_main:print(f'val_bpb {{r.final.val_bpb:.8f}} val_loss {{r.final.val_loss:.8f}} steps {{r.steps}} run_dir {{r.run_dir}}')
"""


@dataclass(frozen=True)
class Packed:
    preset: str
    script: bytes  # train_gpt.py
    files: tuple[str, ...]  # archive names of everything inside
    source_bytes: int  # the readable sources, before minification
    minified_bytes: int

    @property
    def code_bytes(self) -> int:
        return len(self.script)


def minify(source: str, name: str) -> str:
    try:
        import python_minifier
    except ImportError:
        raise PgolfError("pgolf submit needs python-minifier (pip install 'pgolf[submit]')") from None
    return python_minifier.minify(
        source, filename=name, remove_annotations=False, remove_literal_statements=True, rename_locals=False,
        rename_globals=False, hoist_literals=False, remove_asserts=False, remove_debug=False,
        remove_object_base=False, convert_posargs_to_args=False, prefer_single_line=True)


def pack(preset: str, closure: Closure | None = None) -> Packed:
    """The packed script for `preset` (a preset name or a .toml path)."""
    closure = closure or import_closure()
    toml = preset_path(preset)
    name = toml.stem
    files: dict[str, str] = {}
    source_bytes = 0
    for module, path in closure.modules.items():
        text = path.read_text(encoding="utf-8")
        source_bytes += len(text.encode("utf-8"))
        files[archive_name(module, path)] = minify(text, str(path))
    for path in closure.native:
        text = path.read_text(encoding="utf-8")
        source_bytes += len(text.encode("utf-8"))
        files[f"csrc/{path.name}"] = text  # counted (it adds capability); not built by the script
    for path in preset_files(toml):  # the preset and those it extends (`extends = "baseline"`)
        files[f"pgolf/configs/{path.stem}.toml"] = path.read_text(encoding="utf-8")
    program = _BOOTSTRAP.format(files=files, preset=name)
    blob = base64.b85encode(brotli.compress(program.encode("utf-8"), quality=11)).decode("ascii")
    script = (WRAPPER_HEAD + f'exec(brotli.decompress(base64.b85decode("{blob}")))\n').encode("ascii")
    return Packed(name, script, tuple(files), source_bytes, sum(len(s.encode("utf-8")) for s in files.values()))


def unpack_program(script: bytes) -> str:
    """The program a packed script executes (for inspection and tests)."""
    lines = script.decode("ascii").split("\n")
    head, line = (lines[0] + "\n", lines[1]) if len(lines) >= 2 else ("", "")
    prefix, suffix = 'exec(brotli.decompress(base64.b85decode("', '")))'
    if head != WRAPPER_HEAD or not line.startswith(prefix) or not line.endswith(suffix):
        raise PgolfError("not a pgolf packed script (expected the two-line brotli/base85 exec wrapper)")
    return brotli.decompress(base64.b85decode(line[len(prefix):-len(suffix)])).decode("utf-8")
