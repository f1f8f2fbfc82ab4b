"""The house rules that the code's shape depends on: no import cycle, arrows one way."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_import_graph_has_no_cycle_and_arrows_go_one_way():
    g = import_graph.graph()
    assert import_graph.cycles(g) == []
    assert len(g) > 50  # every module was read
    for m, deps in g.items():
        if m.startswith(("analysis", "trainers")):
            assert not any(d.startswith("orchestrator") for d in deps), (m, deps)
        if m.startswith("analysis"):
            assert not any(d.startswith("trainers") for d in deps), (m, deps)


def test_reading_a_run_imports_neither_ray_nor_torch():
    code = ("import sys; import orchestrator.cli.read_commands, orchestrator.cli.main; "
            "print('ray' in sys.modules, 'torch' in sys.modules)")
    import subprocess
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
