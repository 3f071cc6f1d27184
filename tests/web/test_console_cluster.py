"""The console's Cluster page: two servers on one PostgreSQL, one killed, in Debian's Chromium.

Screenshots go to the same folder as the other console tests' (named at the end of the run).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from tests.postgres import Postgres
from tests.support import ADMIN_KEY, LiveServer, mock_config
from tests.web.test_console import browser, page, shoot, sign_in

pytestmark = pytest.mark.slow

__all__ = ["browser", "page"]  # the fixtures, shared with the other console tests

LEASE_S = 3.0


def _server(tmp_path: Path, upstream: str, database_url: str, node: str) -> LiveServer:
    cluster = f'[cluster]\nnode = "{node}"\nlease_s = {LEASE_S}\nrenew_s = 0.5\naddress = "http://{node}.internal:8700"\n'
    return LiveServer(
        tmp_path / node, mock_config(upstream, extra=f'database_url = "{database_url}"\n{cluster}')
    )


def test_the_cluster_page_lists_the_nodes_and_shows_a_killed_one_not_live(
    page: Page, postgres: Postgres, mock_upstream: str, tmp_path: Path
) -> None:
    url = postgres.new_database()
    alpha = _server(tmp_path, mock_upstream, url, "alpha").start()
    beta = _server(tmp_path, mock_upstream, url, "beta")
    try:
        beta.start()
        tenant_key = alpha.new_tenant_key("initech")
        sign_in(page, alpha, tenant_key)
        expect(page.get_by_role("link", name="Cluster")).to_be_hidden()  # the admin's, like the grid
        page.goto(alpha.url + "/#/cluster")
        expect(page.get_by_test_id("page-cluster")).to_contain_text("This endpoint needs the admin key.")
        page.get_by_test_id("signout").click()

        sign_in(page, alpha, ADMIN_KEY)
        page.get_by_role("link", name="Cluster").click()
        nodes = {n["name"]: n for n in alpha.admin("GET", "/admin/cluster").json()["data"]}
        for name, server in (("alpha", alpha), ("beta", beta)):
            row = page.get_by_test_id(f"node-{name}")
            expect(row.locator("td").nth(1)).to_have_text(str(nodes[name]["epoch"]))
            expect(row.locator("td").nth(2)).to_have_text("yes")
            expect(row.locator("td").nth(3)).to_contain_text(" s")
            expect(row.locator("td").nth(4)).to_contain_text(" s ago")
            expect(row.locator("td").nth(5)).to_have_text(f"http://{name}.internal:8700")
            assert server.proc is not None
            expect(row.locator("td").nth(7)).to_have_text(str(server.proc.pid))  # once it has renewed
        expect(page.get_by_test_id("node-alpha").locator("td").first).to_contain_text("(this one)")
        expect(page.get_by_test_id("node-beta").locator("td").first).not_to_contain_text("(this one)")
        expect(page.get_by_test_id("cluster-summary")).to_have_text("2 of 2 node(s) live; leases of 3 s")
        shoot(page, "30-cluster")

        beta.kill()  # a crash: its lease runs out rather than ending, and the page follows
        row = page.get_by_test_id("node-beta")
        expect(row.locator("td").nth(2)).to_have_text("no", timeout=LEASE_S * 1000 + 10_000)
        expect(row.locator("td").nth(3)).to_have_text("ended")
        expect(page.get_by_test_id("cluster-summary")).to_have_text("1 of 2 node(s) live; leases of 3 s")
        # Live nodes are listed first.
        expect(page.get_by_test_id("nodes").locator("tbody tr").first).to_have_attribute(
            "data-testid", "node-alpha"
        )
        shoot(page, "31-cluster-one-killed")
    finally:
        beta.stop()
        alpha.stop()
