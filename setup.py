"""The package layout; the project metadata is in pyproject.toml.

The folders the service reads at run time stay at the top of the source tree, where developers and
the `alembic` command expect them. A wheel must still carry them, because a hospital installs a
wheel, never a checkout: each one becomes a data-only package `allocator._bundled.<folder>`, and
`allocator.resources` finds it there (or, in a checkout, next to the package).

This lives in setup.py because pyproject.toml can either discover packages or list them, not both:
the code packages are discovered (so that a new subpackage is never left out of the wheel), the
bundled folders are mapped by name.
"""

import os

from setuptools import find_packages, setup

# folder at the top of the source tree -> the data files of it that the service reads (in every
# subfolder; the .py files of migrations/ come along as modules)
BUNDLED = {
    "templates": ["*.html"],
    "static": ["*.css", "*.js", "LICENSE", "README.txt"],  # jsqr/ keeps its licence
    "migrations": ["*.mako"],
    "trials": ["*.toml"],
}


def bundled_packages() -> dict[str, str]:
    """Every folder of BUNDLED, subfolders included, as `allocator._bundled.<dotted path>` -> path.
    Each subfolder is a package of its own, as setuptools expects of anything inside a package."""
    packages = {}
    for top in BUNDLED:
        for path, dirs, _files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            packages["allocator._bundled." + path.replace(os.sep, ".")] = path
    return packages


BUNDLED_PACKAGES = bundled_packages()

# The kit library keeps its import name `kits`, though PyPI has an unrelated `kits` and two
# distributions in one environment would share site-packages/kits. Installing it as `allocator_kits`
# from the kits/ folder breaks the development tools: mypy cannot follow setuptools' editable-install
# import hook, and with the checkout on sys.path the same file loads as two modules. A clash needs both
# in one environment; the service is installed into a virtual environment of its own (README).

setup(
    packages=[*find_packages(include=["allocator", "allocator.*", "kits", "kits.*"]), *BUNDLED_PACKAGES],
    package_dir=BUNDLED_PACKAGES,
    package_data={
        # the compiled French catalogue (committed, so the wheel needs no build step) and its source
        "allocator": ["data/*.txt", "translations/*/LC_MESSAGES/*.mo", "translations/*/LC_MESSAGES/*.po"],
        **{name: BUNDLED[path.split(os.sep)[0]] for name, path in BUNDLED_PACKAGES.items()},
    },
)
