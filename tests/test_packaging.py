"""Packaging: every module of every package is in the wheel, and the runtime never imports torch."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = {"hbci": "hbci", "export": "hbci/export", "calibration": "hbci/calibration", "runtime": "hbci/runtime"}


def source_modules() -> set[str]:
    names = set()
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            rel = path.relative_to(ROOT / folder)
            if folder == "hbci" and rel.parts[0] in {"export", "calibration", "runtime"}:
                continue
            names.add(f"{package}/{rel.as_posix()}")
    return names


@pytest.mark.slow
def test_wheel_contains_every_module_and_the_shipped_configs(tmp_path):
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path),
                             str(ROOT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    wheel = next(tmp_path.glob("hbci-*.whl"))
    contents = set(zipfile.ZipFile(wheel).namelist())
    missing = source_modules() - contents
    assert not missing, f"modules missing from the wheel: {sorted(missing)}"
    configs = {f"hbci/configs/{p.name}" for p in (ROOT / "hbci" / "configs").glob("*.json")}
    assert configs and configs <= contents


@pytest.mark.parametrize("module", ["hbci.runtime", "hbci.runtime.retriever", "hbci.runtime.video",
                                    "hbci.runtime.tokenizer", "hbci.runtime.bundle", "hbci.runtime.backends"])
def test_runtime_imports_without_torch(module):
    code = f"import sys, {module}; bad = [m for m in ('torch', 'tensorrt', 'open_clip') if m in sys.modules]; " \
           f"print(bad); sys.exit(1 if bad else 0)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_the_readme_test_command():
    import re

    blocks = re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2, "README must start with the demo command and the test command"
    assert "hbci-run --demo" in blocks[0]
    assert blocks[1].strip() in (ROOT / ".ci" / "run").read_text()
