"""The Prefect UI in a real browser (Playwright driving Debian's Chromium): start the pipeline
deployment from its form with a changed parameter, then see the run complete.

``scripts/bootstrap-browser.sh`` (idempotent) installs Chromium (apt) and ``playwright-core`` (npm,
project-local ``node_modules/``) the first time this test runs.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Step "submit": Run -> Custom run -> change Epochs and Run Name in the form -> Submit.
# Step "watch": open the flow run's page and wait for its state badge to read Completed.
SCRIPT = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [step, url, target, runName, epochs] = process.argv.slice(2);
const field = (page, label) => page.locator('.schema-form-property', {
  has: page.locator('.schema-form-property__label', {
    hasText: new RegExp('^' + label + ' \\(Optional\\)$'),
  }),
}).last();
(async () => {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium', args: JSON.parse(process.env.FLAGS),
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 1600 } });
  page.setDefaultTimeout(60000);
  if (step === 'submit') {
    await page.goto(`${url}/deployments/deployment/${target}`, { waitUntil: 'networkidle' });
    await page.getByRole('button', { name: 'Run', exact: true }).click();
    await page.getByText('Custom run', { exact: true }).click();
    await page.waitForURL(/\/run(\?|$)/);
    await page.waitForLoadState('networkidle');
    const name = page.locator('.p-label', { has: page.locator('label', { hasText: 'Run Name' }) })
      .locator('input');
    await name.fill(runName);
    const box = field(page, 'Epochs').locator('input');
    const before = await box.inputValue();
    await box.fill(epochs);
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.waitForURL(u => !/\/run(\?|$)/.test(u.pathname + u.search), { timeout: 60000 });
    console.log(JSON.stringify({ submitted: true, before, after: epochs, page: page.url() }));
  } else {
    let state = '';
    for (let i = 0; i < 60; i++) {
      await page.goto(`${url}/runs/flow-run/${target}`, { waitUntil: 'networkidle' });
      const badge = page.locator('.state-badge').first();
      if (await badge.count()) state = (await badge.innerText()).trim();
      if (['Completed', 'Failed', 'Crashed', 'Cancelled'].includes(state)) break;
      await page.waitForTimeout(5000);
    }
    await page.screenshot({ path: process.env.SHOT, fullPage: false });
    console.log(JSON.stringify({ state }));
  }
  await browser.close();
})().catch(e => { console.error(String(e).split('\n')[0]); process.exit(1); });
"""


@pytest.fixture(scope="module")
def browser_ready():
    """Chromium and playwright-core, installed by the project's own script (idempotent)."""
    subprocess.run(["bash", str(REPO / "scripts" / "bootstrap-browser.sh")], check=True, timeout=900)
    core = REPO / "node_modules" / "playwright-core"
    assert core.is_dir() and Path("/usr/bin/chromium").exists()
    return core


def _node(script: Path, core: Path, shot: Path, *args: str) -> dict:
    env = {
        "PATH": "/usr/bin:/bin:/usr/local/bin",
        "PLAYWRIGHT_CORE": str(core),
        "FLAGS": json.dumps(CHROMIUM_FLAGS),
        "SHOT": str(shot),
        "HOME": str(shot.parent),
    }
    proc = subprocess.run(
        ["node", str(script), *args], capture_output=True, text=True, timeout=600, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr.strip()[-800:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_start_the_pipeline_from_the_ui_form(services_stack, browser_ready, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from a2mae.services.flows import PIPELINE_DEPLOYMENT

    script = tmp_path / "ui.js"
    script.write_text(SCRIPT)
    url = services_stack.stack.prefect.url
    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
    default_epochs = dep.parameters["params"]["epochs"]
    epochs = str(default_epochs + 1)
    name = f"ui-{uuid.uuid4().hex[:8]}"

    got = _node(script, browser_ready, tmp_path / "form.png", "submit", url, str(dep.id), name, epochs)
    assert got["submitted"] and got["before"] == str(default_epochs)

    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        deadline = time.monotonic() + 900
        run = None
        while time.monotonic() < deadline:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name])))
            run = found[0] if found else None
            if run is not None and run.state.is_final():
                break
            time.sleep(3)
    assert run is not None, "the UI did not create the run"
    assert run.deployment_id == dep.id
    assert run.parameters["params"]["epochs"] == int(epochs)  # the changed form field reached the run
    assert run.state.is_completed(), run.state.message

    seen = _node(script, browser_ready, tmp_path / "run.png", "watch", url, str(run.id))
    assert seen["state"] == "Completed"
