"""The package's shape: public names, rooms and what crosses between them."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
import types

import pytest

import vlm_collate as vc

PACKAGE = pathlib.Path(vc.__file__).parent
TESTS = pathlib.Path(__file__).parent
# Folders of the package that are rooms; everything else is the pipeline core.
ROOMS = ("families", "formats", "labels", "media", "pretokenized", "testing", "tools")


def module_name(path: pathlib.Path) -> str:
    parts = ["vlm_collate", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def room_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ROOMS else ""


def imports_of(path: pathlib.Path) -> list[tuple[str, list[str]]]:
    """``(absolute module, imported names)`` of every ``from ... import`` in a file."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            target = ".".join([*base, *([node.module] if node.module else [])])
        else:
            target = node.module or ""
        found.append((target, [alias.name for alias in node.names]))
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


class TestPublicNames:
    def test_all_equals_the_sorted_public_names(self):
        """__all__ is sorted and lists exactly the public names the package defines."""
        import vlm_collate._api as api  # the names __init__ loads on first use

        public = {
            name
            for name, value in vars(api).items()
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and name != "annotations"
        }
        assert (sorted(public), sorted(vc.__all__)) == (vc.__all__, sorted(public))

    def test_public_names_live_at_public_paths(self):
        """Every exported class and function reports a public module path (pickles survive moves)."""
        private = [
            f"{name}: {value.__module__}"
            for name in vc.__all__
            if isinstance(value := getattr(vc, name), (type, types.FunctionType))
            and any(is_private(part) for part in value.__module__.split("."))
        ]
        assert [] == private

    @pytest.mark.parametrize("room", ["labels", "media", "pretokenized", "families"])
    def test_room_names_live_at_public_paths(self, room):
        """A room's exported names report a public module path too."""
        module = getattr(vc, room)
        private = [
            f"{name}: {value.__module__}"
            for name in module.__all__
            if isinstance(value := getattr(module, name), (type, types.FunctionType))
            and any(is_private(part) for part in value.__module__.split("."))
        ]
        assert [] == private


class TestAbstractBases:
    @pytest.mark.parametrize("base", ["BaseCollator", "LabelStrategy", "MediaStrategy"])
    def test_bases_are_abstract(self, base):
        """The three roles a family fills are abstract classes."""
        import inspect

        assert inspect.isabstract(getattr(vc, base))


class TestRooms:
    def test_no_underscore_name_crosses_a_room(self):
        """No module imports another room's underscore names or private modules."""
        crossings = []
        for path in sorted(PACKAGE.rglob("*.py")):
            importer = module_name(path)
            for target, names in imports_of(path):
                if not target.startswith("vlm_collate"):
                    continue
                target_room = room_of(target)
                if target_room == room_of(importer):
                    continue
                private_module = target_room and any(
                    is_private(part) for part in target.split(".")[2:]
                )
                private_names = [name for name in names if is_private(name)]
                if private_module or private_names:
                    crossings.append(f"{importer}: from {target} import {', '.join(names)}")
        assert [] == crossings

    def test_tools_are_not_imported_by_the_package(self):
        """``import vlm_collate`` leaves the CLI, inspect and bench modules unimported."""
        code = (
            "import sys, vlm_collate; "
            "print(sorted(m for m in sys.modules if m.startswith('vlm_collate.tools')))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == result.stdout.strip()


class TestTests:
    def test_no_test_edits_sys_path(self):
        """Tests import their helpers as a package, never by editing sys.path."""
        offenders = [
            str(path.relative_to(TESTS))
            for path in TESTS.rglob("*.py")
            if path.name != "test_layout.py" and "sys.path" in path.read_text()
        ]
        assert [] == offenders
