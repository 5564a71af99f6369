"""The runtime package holds only the runtime: it imports without numpy (the ``demo`` extra) and
never imports the repository tools (``tools/``: the demo generator, the card refresh)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# numpy made uninstallable: importing it fails exactly as in an install without the demo extra
# ("No module named 'numpy'", which optional users such as pandera catch).
NO_NUMPY = """
import importlib.abc, sys
class _NoNumpy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] == "numpy":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoNumpy())
"""
# Every module of orchestration/ and contracts/ imported without numpy; then which of the
# loaded modules are numpy's or the tools'.
PROBE = (
    NO_NUMPY
    + """
import importlib, json, pkgutil
import orchestration.definitions
import contracts, orchestration
names = ["orchestration.definitions"]
for package in (orchestration, contracts):
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(info.name)
        names.append(info.name)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tools", "numpy"))
print(json.dumps({"imported": names, "loaded": loaded}))
"""
)


def test_the_runtime_imports_without_numpy_and_without_the_tools():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    # The probe did walk the packages (a walk that found nothing would pass vacuously).
    assert {
        "orchestration.definitions",
        "orchestration.demo",
        "orchestration.defs.rating.provider_card",
        "orchestration.defs.wallets.ledger_asset",
        "contracts.usage_event",
    } <= set(result["imported"])


def test_the_card_refresh_runs_without_numpy_and_says_it_checked_no_demo_model(tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text(
        json.dumps(
            {"gpt-x": {"litellm_provider": "openai", "mode": "chat",
                       "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}
        )
    )  # fmt: skip
    card = tmp_path / "card.csv"
    argv = ["tools.provider_card", "--litellm", str(prices), "--out", str(card)]
    probe = (
        NO_NUMPY
        + f"import runpy; sys.argv = {argv!r}; runpy.run_module(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines() == [
        "note: demo models not checked (the demo generator needs the demo extra)"
    ]
    assert (
        card.read_text().splitlines()[1].startswith("openai,gpt-x,2026-11-01,,0.000001,0.000002,")
    )


def test_the_generator_needs_numpy_and_says_where_it_comes_from():
    probe = NO_NUMPY + "import tools.generator"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        "ImportError: the demo generator (tools/generator) needs numpy, from the demo extra: "
        "pip install -e '.[demo]' (make install installs it)"
    )
