"""The docs site and the support claims stay true to the code: every system check id and every
setting has its reference line, the changelog page is CHANGELOG.md itself, and the versions
setup.cfg and README.md claim are the ones tox.ini runs and .ci/run calls."""

from __future__ import annotations

import configparser
import dataclasses
import re
from pathlib import Path

from django_messenger.conf import MessengerSettings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def table_keys(page: str) -> list[str]:
    """The first cell of each row of the page's tables, without its backquotes."""
    return re.findall(r"^\| `([^`]+)` \|", page, flags=re.MULTILINE)


def test_every_check_id_has_one_row_in_the_checks_reference_and_no_row_is_stale() -> None:
    # Given the ids the checks can report and the rows of docs/checks.md
    source = read(ROOT / "django_messenger" / "checks.py")
    reported = set(re.findall(r"id=f?\"(django_messenger\.[EW]\d{3})\"", source))
    rows = [key for key in table_keys(read(DOCS / "checks.md")) if key.startswith("django_messenger.")]

    # Then each id has exactly one row, and each row names an id a check reports
    assert reported, "no check id found in django_messenger/checks.py"
    assert sorted(set(rows)) == sorted(reported)
    assert len(rows) == len(set(rows)), "an id has two rows"
    # ... in id order, errors before warnings (where the checks being added find their place)
    assert rows == sorted(rows, key=lambda key: (key[-4] == "W", key))


def test_every_setting_has_a_row_in_the_settings_reference() -> None:
    # Given the keys of MESSENGER and the rows of docs/settings.md
    keys = {field.name for field in dataclasses.fields(MessengerSettings)}
    rows = set(table_keys(read(DOCS / "settings.md")))

    # Then every key is described there, and no row describes a key that is not read
    assert keys <= rows, f"settings without a row: {sorted(keys - rows)}"
    assert not {row for row in rows if row.isupper()} - keys


def test_the_changelog_page_is_the_changelog_included_not_a_copy() -> None:
    # Given the site's changelog page and mkdocs.yml
    page = read(DOCS / "changelog.md")
    config = read(ROOT / "mkdocs.yml")

    # Then the page holds no entry of its own, only the include of CHANGELOG.md at the root
    text = re.sub(r"<!--.*?-->", "", page, flags=re.DOTALL)
    assert [line for line in text.splitlines() if line.strip()] == ['--8<-- "CHANGELOG.md"']
    assert "pymdownx.snippets" in config
    assert "check_paths: true" in config  # a missing CHANGELOG.md fails the build
    assert (ROOT / "CHANGELOG.md").is_file()


def test_every_page_is_in_the_site_navigation() -> None:
    # Given the pages in docs/ and the nav of mkdocs.yml
    config = read(ROOT / "mkdocs.yml")
    nav = set(re.findall(r"^\s+- [^:\n]+: (\S+\.md)$", config, flags=re.MULTILINE))

    # Then every page is reachable from the navigation, and every nav entry is a page
    assert nav == {path.name for path in DOCS.glob("*.md")}


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg", encoding="utf-8")
    return parser


def tox_envs() -> list[str]:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "tox.ini", encoding="utf-8")
    return [env.strip() for env in parser["tox"]["envlist"].split(",")]


def test_the_claimed_versions_are_the_ones_tox_runs_and_ci_calls() -> None:
    # Given the classifiers, the tox matrix, README.md and .ci/run
    classifiers = setup_cfg()["metadata"]["classifiers"].split("\n")
    pythons = {
        c.rsplit(" ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    djangos = {
        c.rsplit(" ", 1)[1] for c in classifiers if re.fullmatch(r"Framework :: Django :: \d+\.\d+", c)
    }
    cells = [re.fullmatch(r"py3(\d+)-django(\d)(\d+)", env) for env in tox_envs()]
    matrix = {(f"3.{m[1]}", f"{m[2]}.{m[3]}") for m in cells if m}
    readme = read(ROOT / "README.md")
    ci_script = read(ROOT / ".ci" / "run")

    # Then every claimed Python and Django version is a cell of the matrix, and no cell is unclaimed
    assert pythons == {python for python, _ in matrix}
    assert djangos == {django for _, django in matrix}
    # ... README's table names each cell
    for python, django in matrix:
        assert re.search(rf"^\| {re.escape(python)} \| {re.escape(django)}\b", readme, flags=re.MULTILINE), (
            python,
            django,
        )
    # ... and .ci/run runs each cell that README's test command is not (3.11 is), and the docs
    for python, django in matrix - {("3.11", "5.2")}:
        env = f"py{python.replace('.', '')}-django{django.replace('.', '')}"
        assert re.search(rf"tox run -e \S*{env}", ci_script), env
    assert "tox run -e docs" in ci_script
    oldest = min((python for python, _ in matrix), key=lambda version: tuple(map(int, version.split("."))))
    assert setup_cfg()["options"]["python_requires"] == f">={oldest}"
