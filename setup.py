"""The installed import names are the project's own: the repository's `services/` and `shared/` folders (with their data-only folders: migrations, seed, static…) are
installed as `safe_procurement.services` and `safe_procurement.shared` (so a user's own `services` or `shared`
package never clashes with them). pyproject.toml holds everything else; only this mapping needs code, because
setuptools' package discovery cannot add a prefix."""

from setuptools import find_namespace_packages, setup

ROOT = "safe_procurement"
FOLDERS = ("services", "shared")

FOUND = find_namespace_packages(include=[f"{f}{s}" for f in FOLDERS for s in ("", ".*")], exclude=["*__pycache__"])

setup(
    packages=[f"{ROOT}.{p}" for p in FOUND],
    package_dir={f"{ROOT}.{f}": f for f in FOLDERS},
)
