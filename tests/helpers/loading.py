"""Import a script of the repository (tools/*.py, configs/*.py) by path, for tests."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_script(relative_path: str):
    """The module object of ROOT/relative_path (e.g. "tools/convert_wan.py"), freshly executed."""
    path = os.path.join(ROOT, relative_path)
    name = "script_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
