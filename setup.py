"""Packaging beyond what pyproject.toml can say: the lessons ship inside the package.

The repository keeps one copy of each lesson in the top-level ``notebooks/``; a wheel (or ``pip install .``)
installs that folder as ``labkit/notebooks/`` (see ``labkit.lessons.notebooks_dir``), and an editable install
maps it in place. Everything else (metadata, dependencies, package data) lives in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["labkit", "labkit.*"]), "labkit.notebooks"],
    package_dir={"labkit.notebooks": "notebooks"},
)
