"""One self-contained `train_gpt.py` for a configuration, counted as the records count code (frontier-spec F8.1).

The files of the configuration's import closure (`pgolf.export.trace`: only what its options
run, traced on the recipe) get short error messages (`pgolf.export.messages`: file:line and
the values) and are minified (`pgolf.export.minify`: documentation out, locals renamed), put
with the configuration's TOML (its fields that differ from the defaults, without the per-run
ones) into a small program that writes them to a
temporary directory and runs the trainer from there, and that program is brotli-11
compressed and base85-encoded into the records' two-line exec wrapper:

    import brotli,base64
    exec(brotli.decompress(base64.b85decode("...")))

Files go to disk, not to an in-memory importer, because Triton compiles kernels from
their source files and the config loader reads presets next to its module. Counted code
bytes are the size of that script; a packed run counts its own file (`pgolf.export.code_size`).
Arguments are config overrides (`key=value`; the challenge's environment variables apply as
in `pgolf train`); it runs under torchrun too. `train_gpt.py eval ARTIFACT [data=...
tokenizer=... stride=N batch_tokens=N device=cpu]` scores an artifact file instead (as
`pgolf eval` does), which is how a submission's total is verified.
"""
from __future__ import annotations

import ast
import base64
import json
from dataclasses import dataclass

import brotli

from pgolf import __version__
from pgolf.config import Config, from_dict
from pgolf.errors import PgolfError
from pgolf.export.messages import shorten_files
from pgolf.export.minify import minify
from pgolf.export.trace import Closure, archive_name, import_closure

WRAPPER_HEAD = "import brotli,base64\n"
PRESET = "recipe"  # the embedded preset's name: pgolf/configs/recipe.toml inside the packed tree
RUN_ONLY = ("name", "out_dir", "seed", "resume", "overwrite", "progress")  # run.* that do not define the recipe

_BOOTSTRAP = """import atexit,os,shutil,sys,tempfile
F={files}
d=tempfile.mkdtemp(prefix='pgolf-')
atexit.register(shutil.rmtree,d,True)
for n,s in F.items():
 p=os.path.join(d,n);os.makedirs(os.path.dirname(p),exist_ok=True)
 with open(p,'w',encoding='utf-8') as f:f.write(s)
sys.path.insert(0,d)
from pgolf.export import code_size
code_size.PACKED_SCRIPT=os.path.abspath(__file__)
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
 r=run_training(load_config({preset!r},a),preset={preset!r})
except PgolfError as e:print(f'train_gpt.py: error: {{e}}\\n(messages here are shortened to file:line and values; the full text is at that line of the pgolf {version} source)',file=sys.stderr);sys.exit(2)
if r.is_main:print(f'val_bpb {{r.final.val_bpb:.8f}} val_loss {{r.final.val_loss:.8f}} steps {{r.steps}} run_dir {{r.run_dir}}')
"""


@dataclass(frozen=True)
class Packed:
    script: bytes  # train_gpt.py
    files: tuple[str, ...]  # archive names of everything inside
    source_bytes: int  # the readable sources, before minification
    minified_bytes: int
    closure: Closure

    @property
    def code_bytes(self) -> int:
        return len(self.script)


def recipe(config: dict) -> dict:
    """A configuration (`Config.to_dict()`) without the per-run fields."""
    out = {section: dict(values) for section, values in config.items()}
    for key in RUN_ONLY:
        out.get("run", {}).pop(key, None)
    return out


def _changed(values: dict, defaults: dict) -> dict:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            inner = _changed(value, defaults.get(key, {}))
            if inner:
                out[key] = inner
        elif key not in defaults or defaults[key] != value or type(defaults[key]) is not type(value):
            out[key] = value
    return out


def recipe_toml(cfg: Config) -> str:
    """The TOML preset of `cfg`'s recipe: only the fields that differ from the defaults."""
    return toml_text(_changed(recipe(cfg.to_dict()), Config().to_dict()))


def toml_text(config: dict) -> str:
    """A TOML preset holding a configuration (sections of str/int/float/bool, nested sections as [a.b])."""
    lines = ["# The recipe of the packed run (pgolf.export.pack)."]

    def section(name: str, values: dict) -> None:
        lines.append(f"\n[{name}]")
        lines.extend(f"{key} = {_toml_value(f'{name}.{key}', value)}" for key, value in values.items()
                     if not isinstance(value, dict))
        for key, value in values.items():
            if isinstance(value, dict):
                section(f"{name}.{key}", value)

    for name, values in config.items():
        section(name, values)
    return "\n".join(lines) + "\n"


def _toml_value(key: str, value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise PgolfError(f"config {key}: cannot write a {type(value).__name__} to TOML")


def code_files(cfg: Config) -> tuple[Closure, dict[str, str], int]:
    """(closure, archive name -> readable text, their UTF-8 bytes) of what a run of `cfg` needs:
    its modules, the native sources they use (counted for the capability; not built by the
    script), and its recipe as pgolf/configs/recipe.toml. Traced on the recipe: the per-run fields
    (a resumed run's run.resume) add no code to the script."""
    closure = import_closure(from_dict(recipe(cfg.to_dict()), "the run's configuration"))
    files = {archive_name(m, p): p.read_text(encoding="utf-8") for m, p in closure.modules.items()}
    files.update({f"csrc/{p.name}": p.read_text(encoding="utf-8") for p in closure.native})
    files[f"pgolf/configs/{PRESET}.toml"] = recipe_toml(cfg)
    return closure, files, sum(len(s.encode("utf-8")) for s in files.values())


def pack(cfg: Config | dict) -> Packed:
    """The packed script of a configuration (a Config, or its `to_dict()` as a run's config.json holds)."""
    if isinstance(cfg, dict):
        cfg = from_dict(cfg, "the run's configuration")
    closure, readable, source_bytes = code_files(cfg)
    shortened = shorten_files(readable)  # short error messages in the packed copy only (pgolf.export.messages)
    files = {name: minify(text, name) if name.endswith(".py") else text for name, text in shortened.items()}
    program = _BOOTSTRAP.format(files="{" + ",".join(f"{n!r}:{_literal(t)}" for n, t in files.items()) + "}",
                                preset=PRESET, version=__version__)
    blob = base64.b85encode(brotli.compress(program.encode("utf-8"), quality=11, lgwin=24)).decode("ascii")
    script = (WRAPPER_HEAD + f'exec(brotli.decompress(base64.b85decode("{blob}")))\n').encode("ascii")
    return Packed(script, tuple(files), source_bytes, sum(len(s.encode("utf-8")) for s in files.values()), closure)


def _literal(text: str) -> str:
    """A Python literal of `text`: raw triple-quoted where it can be (real newlines, no escapes: ~1.3 % fewer
    compressed bytes than repr), else repr."""
    if "'''" in text or text.endswith("\\") or "\r" in text:
        return repr(text)
    return f"r'''{text}'''"


def unpack_program(script: bytes) -> str:
    """The program a packed script executes (for inspection and tests)."""
    lines = script.decode("ascii").split("\n")
    head, line = (lines[0] + "\n", lines[1]) if len(lines) >= 2 else ("", "")
    prefix, suffix = 'exec(brotli.decompress(base64.b85decode("', '")))'
    if head != WRAPPER_HEAD or not line.startswith(prefix) or not line.endswith(suffix):
        raise PgolfError("not a pgolf packed script (expected the two-line brotli/base85 exec wrapper)")
    return brotli.decompress(base64.b85decode(line[len(prefix):-len(suffix)])).decode("utf-8")


def unpack_files(script: bytes) -> dict[str, str]:
    """The files a packed script carries (archive name -> text)."""
    for node in ast.parse(unpack_program(script)).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "F":
            return ast.literal_eval(node.value)
    raise PgolfError("the packed program holds no file table")
