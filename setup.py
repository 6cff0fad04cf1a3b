"""The packages to install: streamcrystal's, and the top-level ``pipelines/`` folder.

The metadata lives in ``pyproject.toml``. ``pipelines/`` stays at the top of the project,
where users edit the ready pipeline files, and is installed as the package
``streamcrystal.pipelines`` so that a normal install (a wheel, ``pip install .``) finds them
by name (:func:`streamcrystal.load_pipeline`).
"""
from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["streamcrystal", "streamcrystal.*"]), "streamcrystal.pipelines"],
    package_dir={"streamcrystal.pipelines": "pipelines"},
)
