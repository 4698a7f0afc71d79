"""cscale_extensions.fastimport: the hub and user servers start without building jsonschema's
IRI parsers, and an IRI check still gives the real checker's answers. A fresh interpreter
(subprocess), since the point is what an import does."""

from __future__ import annotations

import json
import subprocess
import sys

SAMPLES = ["http://example.org/a b", "http://example.org/ä", "urn:x", "::", "", "a:b/c?d#e"]

CHECK = f"""
import json, sys
from cscale_extensions.fastimport import install
install()
import jsonschema
built_at_import = "rfc3987_syntax.syntax_helpers" in sys.modules
checker = jsonschema.Draft7Validator.FORMAT_CHECKER
answers = [[checker.conforms(v, f) for v in {SAMPLES!r}] for f in ("iri", "iri-reference")]
built_after = "rfc3987_syntax.syntax_helpers" in sys.modules
from rfc3987_syntax import is_valid_syntax  # the real module now
real = [[is_valid_syntax(t, v) for v in {SAMPLES!r}] for t in ("iri", "iri_reference")]
print(json.dumps(dict(built_at_import=built_at_import, answers=answers, real=real,
                      built_after=built_after, stub="stand-in" in (sys.modules["rfc3987_syntax"].__doc__ or ""))))
"""


def test_iri_parsers_are_built_at_first_use_with_the_same_answers():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=120, check=True)
    r = json.loads(out.stdout)
    assert not r["built_at_import"]
    assert r["built_after"] and not r["stub"]  # the first check loaded the real module
    assert r["answers"] == r["real"]
    assert any(r["real"][0]) and not all(r["real"][0])  # the samples tell valid from invalid


def test_runs_a_console_script_and_refuses_an_unknown_one():
    r = subprocess.run([sys.executable, "-m", "cscale_extensions.fastimport",
                        "jupyterhub-singleuser", "--version"], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()[0].isdigit()
    r = subprocess.run([sys.executable, "-m", "cscale_extensions.fastimport", "no-such-script"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 2 and "no console script 'no-such-script'" in r.stderr
