"""The reference pages stay complete: every alarm the template defines has its runbook row, every
metric the code emits has its row in the metrics table, every relation the migrations create has
its row in the access matrix, every CLI command has its row, every stack output is described, and
no code or page narrates tickets. Each failure names the row to add and the page to add it to."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from smartpay_tools import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs"
CODE_SPAN = re.compile(r"`([^`\n]+)`")
CAMEL = re.compile(r"^[A-Z][a-z]+(?:[A-Z][a-z]+)+$")
SKIP_DIRS = {".venv", ".git", ".local", ".aws-sam", "node_modules", ".pytest_cache", ".ruff_cache"}


def _section(page: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    text = (DOCS / page).read_text()
    match = re.search(rf"^(#+) {re.escape(heading)}\s*$", text, re.M)
    assert match, f"docs/{page} has no heading '{heading}'"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end():end.start() if end else len(text)]


def _first_cells(section: str) -> set[str]:
    """The code spans in the first cell of every table body row of ``section`` (not the header)."""
    lines = section.splitlines()
    rule = re.compile(r"^\|\s*:?-")
    names: set[str] = set()
    for n, line in enumerate(lines):
        header = n + 1 < len(lines) and rule.match(lines[n + 1])
        if line.startswith("|") and not rule.match(line) and not header:
            names |= set(CODE_SPAN.findall(line.split("|")[1]))
    return names


# --- alarms ------------------------------------------------------------------------------------------

def _template_alarms() -> set[str]:
    template = (PROJECT_ROOT / "template.yaml").read_text()
    return set(re.findall(r"AlarmName: !Sub smartpay-([a-z0-9-]+)-\$\{Stage\}", template))


def test_every_alarm_has_a_runbook_row() -> None:
    alarms = _template_alarms()
    rows = _first_cells(_section("operations.md", "Alarms: what each means and what to do"))
    assert len(alarms) >= 20, "the AlarmName pattern found too few alarms in template.yaml"
    missing = sorted(alarms - rows)
    assert not missing, "docs/operations.md, table 'Alarms: what each means and what to do' lacks rows: " + "; ".join(
        f"| `{name}` | <what it means> | <what to do> |" for name in missing)
    stale = sorted(rows - alarms)
    assert not stale, f"docs/operations.md has runbook rows for alarms template.yaml does not define: {stale}"


# --- metrics -----------------------------------------------------------------------------------------

def _sources() -> list[Path]:
    return sorted([*(PROJECT_ROOT / "functions").rglob("*.py"), *(PROJECT_ROOT / "layers/core/smartpay").rglob("*.py")])


def emitted_metrics(paths: list[Path]) -> dict[str, str]:
    """Metric name → where it is emitted, for every ``add_metric``/``single_metric`` call.

    A literal ``name=`` is the name. Otherwise the names are the CamelCase strings of the module-level
    value the expression reads (``OUTCOME_METRICS[...]``) and of the enclosing function (a loop over
    literal names); a call whose names cannot be found that way fails, so no metric hides."""
    found: dict[str, str] = {}
    for path in paths:
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        module_values = {t.id: n.value for n in tree.body if isinstance(n, ast.Assign)
                         for t in n.targets if isinstance(t, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            if (func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")) not in (
                    "add_metric", "single_metric"):
                continue
            where = f"{path.relative_to(PROJECT_ROOT) if path.is_relative_to(PROJECT_ROOT) else path}:{node.lineno}"
            name = next((k.value for k in node.keywords if k.arg == "name"), node.args[0] if node.args else None)
            if isinstance(name, ast.Constant):
                found.setdefault(name.value, where)
                continue
            assert name is not None, f"{where}: a metric call without a name"
            scopes: list[ast.AST] = [module_values[n.id] for n in ast.walk(name)
                                     if isinstance(n, ast.Name) and n.id in module_values]
            scope: ast.AST = node
            while scope in parents and not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
                scope = parents[scope]
            names = {c.value for s in [*scopes, scope] for c in ast.walk(s)
                     if isinstance(c, ast.Constant) and isinstance(c.value, str) and CAMEL.match(c.value)}
            assert names, (f"{where}: cannot tell which metric this emits; pass a literal name= or read it from "
                           "a module-level dict of literal names")
            for metric in names:
                found.setdefault(metric, where)
    return found


def test_every_emitted_metric_has_a_row() -> None:
    emitted = emitted_metrics(_sources())
    rows = _first_cells(_section("operations.md", "Metrics"))
    assert {"IdempotentRequests", "WebhookDeliveryLatency", "ReconciliationDiscrepancies"} <= emitted.keys()
    missing = sorted(emitted.keys() - rows)
    assert not missing, "docs/operations.md, table 'Metrics' lacks rows: " + "; ".join(
        f"| `{name}` | <function> | | Count | <meaning> | (emitted at {emitted[name]})" for name in missing)
    stale = sorted(rows - emitted.keys())
    assert not stale, f"docs/operations.md's metrics table names metrics no code emits: {stale}"


def test_the_metric_finder_sees_names_read_from_a_dict_and_a_loop(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        'NAMES = {"a": "FirstThing"}\n'
        "def f(metrics, k, totals):\n"
        '    metrics.add_metric(name=NAMES[k], unit="Count", value=1)\n'
        '    totals["SecondThing"] += 1\n'
        "    for name, value in totals.items():\n"
        '        metrics.add_metric(name=name, unit="Count", value=value)\n'
        'single_metric(name="ThirdThing", unit="Count", value=1)\n')
    assert set(emitted_metrics([source])) == {"FirstThing", "SecondThing", "ThirdThing"}


# --- database access matrix -------------------------------------------------------------------------

def _migration_relations() -> dict[str, str]:
    found: dict[str, str] = {}
    pattern = re.compile(r"CREATE\s+(?:OR\s+REPLACE\s+)?(?:MATERIALIZED\s+)?(?:TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?"
                         r"(?:public\.)?([a-z_][a-z0-9_]*)", re.I)
    for path in sorted((PROJECT_ROOT / "layers/core/smartpay/migrations").glob("*.sql")):
        sql = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("--"))
        for name in pattern.findall(sql):
            found.setdefault(name.lower(), path.name)
    return found


def _matrix_rows() -> set[str]:
    text = (DOCS / "database.md").read_text()
    table = re.search(r"^\| Table / view \|.*?(?=^\s*$)", text, re.M | re.S)
    assert table, "docs/database.md has no access matrix (a table whose header starts with '| Table / view |')"
    return {_relation(line) for line in table.group(0).splitlines()[2:]}


def _relation(row: str) -> str:
    """A matrix row's relation: the first code span of its first cell."""
    return CODE_SPAN.findall(row.strip().strip("|").split("|")[0])[0]


def test_every_migration_relation_is_in_the_access_matrix() -> None:
    relations = _migration_relations()
    assert {"vouchers", "voucher_events", "cycle_runs"} <= relations.keys()
    missing = sorted(relations.keys() - _matrix_rows())
    assert not missing, "docs/database.md's access matrix lacks rows: " + "; ".join(
        f"| `{name}` | … one cell per role … | (created in {relations[name]})" for name in missing)


def test_the_access_matrix_agrees_with_the_catalogue_test() -> None:
    """A role's cell is '—' exactly when tests/integration/test_db_roles.py's EXPECTED grants it nothing
    on that relation (that test compares EXPECTED with the real server)."""
    from tests.integration.test_db_roles import EXPECTED

    text = (DOCS / "database.md").read_text()
    table = re.search(r"^\| Table / view \|.*?(?=^\s*$)", text, re.M | re.S)
    assert table
    lines = [line for line in table.group(0).splitlines() if line.startswith("|")]
    roles = [CODE_SPAN.findall(cell)[-1] for cell in lines[0].strip("|").split("|")[1:]]
    assert set(roles) <= EXPECTED.keys(), f"the matrix's columns name unknown roles: {set(roles) - EXPECTED.keys()}"
    wrong = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        relation = _relation(line)
        for role, cell in zip(roles, cells[1:], strict=True):
            if (relation in EXPECTED[role]) == (cell == "—"):
                wrong.append(f"{relation} for {role}: the page says {cell!r}, EXPECTED says {EXPECTED[role].get(relation)}")
    assert not wrong, "docs/database.md's access matrix disagrees with test_db_roles.EXPECTED: " + "; ".join(wrong)


# --- CLI ----------------------------------------------------------------------------------------------

def test_every_cli_command_has_a_row() -> None:
    from smartpay_tools.cli import build_parser

    commands = set(build_parser()._subparsers._group_actions[0].choices)
    rows = _first_cells(_section("operations.md", "The `smartpay` CLI"))
    missing = sorted(commands - rows)
    assert not missing, "docs/operations.md, table 'The `smartpay` CLI' lacks rows: " + "; ".join(
        f"| `{name}` | <purpose> | `smartpay {name} …` |" for name in missing)
    stale = sorted(rows - commands)
    assert not stale, f"docs/operations.md's CLI table names commands the CLI does not have: {stale}"


# --- stack outputs ----------------------------------------------------------------------------------

def test_every_stack_output_is_described() -> None:
    template = (PROJECT_ROOT / "template.yaml").read_text()
    outputs = set(re.findall(r"^  ([A-Z][A-Za-z0-9]+):", template.split("\nOutputs:\n", 1)[1], re.M))
    described = set(CODE_SPAN.findall((DOCS / "deployment.md").read_text()))
    missing = sorted(outputs - described)
    assert not missing, f"docs/deployment.md does not name these stack outputs (add them to its outputs list): {missing}"


# --- performance table ------------------------------------------------------------------------------

def test_the_performance_table_is_rendered_from_the_benchmark_results() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_table", PROJECT_ROOT / "benchmarks" / "table.py")
    assert spec and spec.loader
    table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(table)
    page = (DOCS / "performance.md").read_text()
    assert page.count(table.BEGIN) == 1 and page.count(table.END) == 1, "docs/performance.md lost its table markers"
    shown = page.split(table.BEGIN, 1)[1].split(table.END, 1)[0].strip()
    assert shown == table.render(table.load([table.RESULTS])), (
        "docs/performance.md's table is not the rendering of benchmarks/results.jsonl: "
        "run `python benchmarks/table.py reports/bench-<UTC>.jsonl --write`")


# --- no ticket narration -----------------------------------------------------------------------------

TICKET = re.compile(r"\bissue #?\d+", re.I)


def _texts() -> list[Path]:
    suffixes = {".py", ".md", ".sql", ".yaml", ".yml", ".toml", ".json", ".sh"}
    found = []
    for path in PROJECT_ROOT.rglob("*"):
        parts = set(path.relative_to(PROJECT_ROOT).parts)
        if parts & SKIP_DIRS or not path.is_file():
            continue
        if path.suffix in suffixes or path.name in {"Makefile", "run"}:
            found.append(path)
    return found


def test_no_code_or_page_refers_to_a_ticket() -> None:
    """Code and docs describe the system; the tickets that shaped it are in git's history."""
    hits = [f"{path.relative_to(PROJECT_ROOT)}:{n}: {line.strip()[:100]}"
            for path in _texts() for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
            if TICKET.search(line) and path != Path(__file__)]
    assert not hits, "describe the system, not the ticket:\n" + "\n".join(hits)
