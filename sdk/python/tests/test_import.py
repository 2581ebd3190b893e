"""`import drover` works with the standard library alone, as it must inside step environments."""
import os
import shutil
import subprocess
import sys

PACKAGE = os.path.join(os.path.dirname(__file__), "..", "drover")


def test_importing_drover_loads_no_third_party_module():
    code = (
        "import sys, drover\n"
        "from drover import PipelineController, StorageManager\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pika', 'msgpack'))\n"
        "assert not bad, bad\n"
        "assert 'drover.decorator' not in sys.modules  # loaded on first use\n"
        "from drover import PipelineDecorator\n"
        "from drover.automation.controller import PipelineDecorator as D, PipelineController as C\n"
        "assert D is PipelineDecorator and C is PipelineController\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pika', 'msgpack'))\n"
        "assert not bad, bad\n"
        "assert 'drover.task' not in sys.modules and 'drover.logger' not in sys.modules\n"
        "from drover import Task, Logger, TaskTypes\n"
        "from drover.task import TaskTypes as T2\n"
        "assert TaskTypes is T2 is Task.TaskTypes and Logger.__module__ == 'drover.logger'\n"
        "print(drover.__version__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0.1.0"


def test_the_bundled_files_import_without_site_packages(tmp_path):
    """Agents put a copy of drover/**/*.py on PYTHONPATH; -S leaves out every installed package."""
    shutil.copytree(PACKAGE, tmp_path / "drover", ignore=lambda d, names: [
        n for n in names if not n.endswith(".py") and not os.path.isdir(os.path.join(d, n))])
    code = ("from drover.automation.controller import PipelineDecorator\n"
            "from drover import StorageManager; print(StorageManager.get_local_copy(__import__('sys').executable))")
    env = {"PYTHONPATH": str(tmp_path), "PATH": os.environ.get("PATH", "")}
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == sys.executable
