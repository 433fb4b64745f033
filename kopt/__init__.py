"""kopt: the prescribed top-level folders (agent/, harness/, verifier/) installed as kopt.*.

pyproject.toml maps kopt.agent -> agent/ and so on. When Python finds this folder first (a
script or test run from the repository root), the same mapping is made here, so `kopt.verifier`
is the repository's verifier/ either way.
"""

from pathlib import Path

__version__ = "0.1.0"

_root = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "verifier").is_dir() and (_root / "verifier" / "__init__.py").is_file():
    __path__.append(str(_root))  # noqa: F821 (a package's __path__)
