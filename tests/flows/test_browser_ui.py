"""The Prefect UI in a real browser (Playwright driving Debian's Chromium): start the pipeline
deployment from its form, grouped by stage, with fields changed by their labels inside their section
(a number, a nullable number and a dropdown), then see the run complete with those values.

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

# Step "submit": Run -> Custom run -> in section "4. Pre-train" change Epochs, Max Steps (nullable:
# 0 = no cap) and the Model variant dropdown, read the DVC remote of section 3 -> Submit.
# Step "watch": open the flow run's page and wait for its state badge to read Completed.
SCRIPT = r"""
const { chromium } = require(process.env.PLAYWRIGHT_CORE);
const [step, url, target, runName, epochs, maxSteps, variant] = process.argv.slice(2);
const quoted = s => JSON.stringify(s);
// A form property by its label ("Title", shown as "Title (Optional)" when it has a default), in a scope.
const property = (scope, title) => scope.locator(
  'xpath=.//div[contains(concat(" ", @class, " "), " schema-form-property ")]' +
  '[./div[contains(@class, "p-label__header")]//span[contains(@class, "schema-form-property__label")]' +
  `[normalize-space()=${quoted(title)} or normalize-space()=${quoted(title + ' (Optional)')}]]`).first();
const choice = async (scope, page, title, option) => {
  await property(scope, title).locator('button.p-select-button__control').focus();
  await page.keyboard.press('Space');  // opens the dropdown (a click only focuses it)
  await page.getByRole('option', { name: option, exact: true }).click();
  const shown = property(scope, title).locator('.p-select-button__value');
  await shown.filter({ hasText: option }).waitFor();  // the label follows the choice a moment later
  return (await shown.innerText()).trim();
};
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
    const labels = await page.locator('.schema-form-property__label').allInnerTexts();
    const pretrain = property(page, '4. Pre-train');
    const remote = (await property(property(page, '3. Data version (DVC)'), 'DVC remote')
      .locator('.p-select-button__value').innerText()).trim();
    const box = property(pretrain, 'Epochs').locator('input');
    const before = await box.inputValue();
    await box.fill(epochs);
    const cap = property(pretrain, 'Max Steps').locator('input');  // not the one of "5. Fine-tune"
    const capBefore = await cap.inputValue();
    await cap.fill(maxSteps);
    const chosen = await choice(pretrain, page, 'Model variant', variant);
    await page.locator('form').first().screenshot({ path: process.env.SHOT });
    await page.getByRole('button', { name: 'Submit', exact: true }).click();
    await page.waitForURL(u => !/\/run(\?|$)/.test(u.pathname + u.search), { timeout: 60000 });
    console.log(JSON.stringify({ submitted: true, labels, remote, before, capBefore, chosen }));
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


def test_start_the_pipeline_from_the_grouped_ui_form(services_stack, browser_ready, tmp_path):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    from a2mae.services.flows import PIPELINE_DEPLOYMENT
    from flows.params import RetrainParams

    script = tmp_path / "ui.js"
    script.write_text(SCRIPT)
    url = services_stack.stack.prefect.url
    with services_stack.prefect_settings(), get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(PIPELINE_DEPLOYMENT)
    defaults = dep.parameters["params"]["pretrain"]
    epochs, max_steps, variant = str(defaults["epochs"] + 1), "2", "a2mae_vit_nano_p8_t96"
    assert defaults["model_name"] != variant
    name = f"ui-{uuid.uuid4().hex[:8]}"

    args = ("submit", url, str(dep.id), name, epochs, max_steps, variant)
    got = _node(script, browser_ready, tmp_path / "form.png", *args)
    assert got["submitted"] and got["before"] == str(defaults["epochs"])
    assert got["capBefore"] == str(defaults["max_steps"]) and got["chosen"] == variant
    assert got["remote"] == "s3"  # the DVC remote is a dropdown holding the services' remote
    sections = [t.removesuffix(" (Optional)") for t in got["labels"] if t[:1].isdigit()]
    assert sections == [
        "1. Ingest",
        "2. Tile",
        "3. Data version (DVC)",
        "4. Pre-train",
        "5. Fine-tune",
        "6. Evaluate and promote",
    ]

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
    sent = run.parameters["params"]
    assert sent["pretrain"] == {**defaults, "epochs": int(epochs), "max_steps": 2, "model_name": variant}
    resolved = RetrainParams.model_validate(sent).resolve()  # what the run trained with
    assert resolved.pretrain.max_steps == 2 and resolved.pretrain.epochs == int(epochs)
    assert (
        resolved.model.name == variant
        and resolved.finetune.max_steps == dep.parameters["params"]["finetune"]["max_steps"]
    )
    assert run.state.is_completed(), run.state.message

    seen = _node(script, browser_ready, tmp_path / "run.png", "watch", url, str(run.id))
    assert seen["state"] == "Completed"
