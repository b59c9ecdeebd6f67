"""``smartpay disburse``: a programme cycle through the local gateway, resumable, with exit codes."""

import json

import pytest

from smartpay_tools import cli
from smartpay_tools.local import envfile
from smartpay_tools.local.services import free_port
from tests import factories

pytestmark = pytest.mark.integration


def _cycle(pg, n: int, cycle: str) -> list[str]:
    return [factories.voucher(pg, factories.beneficiary(pg)["id"], cycle=cycle)["id"] for _ in range(n)]


def _status_counts(pg, cycle: str) -> dict[str, int]:
    rows = pg.execute("SELECT status, count(*) AS n FROM vouchers WHERE cycle = %s GROUP BY 1", (cycle,)).fetchall()
    return {r["status"]: r["n"] for r in rows}


def _disburse(*extra: str, url: str | None = None, key: str | None = None) -> int:
    argv = ["disburse", "--programme", "old_age", "--quiet", *extra]
    argv += ["--url", url] if url else []
    argv += ["--api-key", key] if key else []
    return cli.main(argv)


def test_resumable_cycle_through_the_gateway(gateway_url, api_keys, pg, sim, capsys, tmp_path) -> None:
    cycle = "2026-01"
    _cycle(pg, 30, cycle)
    # first run: a limit, small batches; the defaults (gateway URL, operator key) come from the env file
    env = envfile.load()
    env["LocalStack"]["GatewayPort"] = int(gateway_url.rsplit(":", 1)[1])
    env_file = tmp_path / "env.json"
    env_file.write_text(json.dumps(env))
    code = cli.main(["--env-vars", str(env_file), "disburse", "--programme", "old_age", "--cycle", cycle,
                     "--limit", "12", "--batch-size", "5", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "calls: 3  attempted: 12  active: 12  pending: 0  failed: 0" in out and "left in the cycle: 18" in out
    assert _status_counts(pg, cycle) == {"active": 12, "issued": 18}

    # second run: only what is left is sent
    assert _disburse("--cycle", cycle, "--batch-size", "7", url=gateway_url, key=api_keys["operator"]) == 0
    out = capsys.readouterr().out
    assert "attempted: 18  active: 18" in out and "left in the cycle: 0  stopped: done" in out
    assert _status_counts(pg, cycle) == {"active": 30}
    stats = sim.stats()
    assert stats["credits"] == 30 and stats["vouchers_credited"] == 30 and stats["double_credited"] == {}

    # third run: nothing to do
    assert _disburse("--cycle", cycle, url=gateway_url, key=api_keys["operator"]) == 0
    assert "calls: 1  attempted: 0" in capsys.readouterr().out
    assert sim.stats()["credits"] == 30


def test_failed_and_pending_exit_1_and_a_rerun_finishes(gateway_url, api_keys, pg, sim, capsys) -> None:
    cycle = "2026-02"
    ids = _cycle(pg, 6, cycle)
    sim.set_voucher(ids[0], reject="beneficiary wallet closed")
    assert _disburse("--cycle", cycle, url=gateway_url, key=api_keys["operator"]) == 1
    out = capsys.readouterr().out
    assert "active: 5  pending: 0  failed: 1" in out
    assert _status_counts(pg, cycle) == {"active": 5, "failed": 1}

    more = _cycle(pg, 4, cycle)
    sim.configure(error_rate=1.0)  # Buffr down: every voucher stays pending, the command stops, exit 1
    assert _disburse("--cycle", cycle, url=gateway_url, key=api_keys["operator"]) == 1
    out = capsys.readouterr().out
    assert "pending: 4" in out and "stopped: no progress" in out and "run the command again" in out
    assert _status_counts(pg, cycle) == {"active": 5, "failed": 1, "pending": 4}
    sim.configure(error_rate=0.0)
    assert _disburse("--cycle", cycle, url=gateway_url, key=api_keys["operator"]) == 0
    assert _status_counts(pg, cycle) == {"active": 9, "failed": 1}
    assert all(sim.stats(detail=True)["credits_per_voucher"][v] == 1 for v in more)


def test_refused_unavailable_and_usage(gateway_url, api_keys, pg, capsys) -> None:
    _cycle(pg, 2, "2026-09")
    before = _status_counts(pg, "2026-09")
    assert _disburse("--cycle", "2026-09", url=gateway_url, key=api_keys["buffr"]) == 2  # no vouchers:write
    assert "403" in capsys.readouterr().err
    assert _disburse("--cycle", "2026-13", url=gateway_url, key=api_keys["operator"]) == 2
    assert "cycle" in capsys.readouterr().err
    assert _disburse("--cycle", "2026-09", url=f"http://127.0.0.1:{free_port()}", key="k") == 3
    assert "unavailable" in capsys.readouterr().err
    assert _disburse("--cycle", "2026-09", "--batch-size", "0", url=gateway_url, key="k") == 2
    assert _status_counts(pg, "2026-09") == before == {"issued": 2}
