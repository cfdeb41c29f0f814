"""cluster.pyyaml: PyYAML imported with its regular expressions compiled on first use, and
loading exactly as PyYAML imported plainly does."""

from __future__ import annotations

import json
import subprocess
import sys

from support.runs import REPO

# Every implicit type PyYAML's resolver tells apart, a timestamp for the constructor, and text
# the pure-Python reader checks character by character.
DOCUMENT = """\
flags: [yes, No, on, OFF, true, False]
numbers: [12, -0x1F, 0o17, 0b101, 1_000, 3.5, -.inf, .NaN, 6.02e+23, 190:20:30]
nothing: [~, null, ]
when: [2001-12-14t21:59:43.10-05:00, 2002-12-14]
merge: {<<: {a: 1}, b: 2}
text: "héllo \\u00e9 \\U0001F600"
"""

LOAD = f"""
import json, sys, re
IMPORTS
document = {DOCUMENT!r}
out = {{}}
for name in ("SafeLoader", "CSafeLoader", "FullLoader"):
    loader = getattr(yaml, name, None)
    if loader is not None:
        out[name] = repr(yaml.load(document, Loader=loader))
try:
    yaml.load("key: \\x07bell", Loader=yaml.SafeLoader)
except yaml.YAMLError as error:
    out["non_printable"] = str(error)
out["dump"] = yaml.safe_dump({{"a": [1, "yes", None, 2.5]}})
print(json.dumps(out))
"""


def _load(imports: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", LOAD.replace("IMPORTS", imports)], cwd=REPO, capture_output=True,
                          text=True, check=True)
    return json.loads(proc.stdout)


def test_loads_and_dumps_exactly_as_plain_pyyaml() -> None:
    ours = _load("from cluster.pyyaml import yaml")
    plain = _load("import yaml")
    assert ours == plain
    assert "special characters are not allowed" in ours["non_printable"]
    assert "datetime.datetime(2001, 12, 14, 21, 59, 43, 100000" in ours["SafeLoader"]


def test_importing_the_spec_compiles_none_of_pyyamls_patterns_and_leaves_re_compile_alone() -> None:
    probe = """
import re, sys
import cluster.spec
import yaml
from cluster.pyyaml import _PatternOnFirstUse
lazy = yaml.reader.Reader.NON_PRINTABLE
assert isinstance(lazy, _PatternOnFirstUse), lazy
assert all(isinstance(r, _PatternOnFirstUse) for rs in yaml.resolver.Resolver.yaml_implicit_resolvers.values()
           for _, r in rs), "a resolver pattern was compiled at import"
assert re.compile.__module__ == "re" and isinstance(re.compile("a+"), re.Pattern)
assert lazy.search("ok\\x07") is not None and lazy.search("ok") is None
assert lazy.search.__self__ is lazy.match.__self__ and isinstance(lazy.search.__self__, re.Pattern)  # compiled once
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
