// The on-call scenario in a real browser: Debian's chromium, headless, driven by
// playwright-core. Run by crates/ordo-cli/tests/console.rs against a console next to a
// running `ordo run` whose store holds a poison deposit, a lost version and a merge
// without its cut. The operator finds each from the overview, reads the dry run, fixes
// each with a reason, sees the streams converge and the actions in the journal; a form
// from another origin is refused. Screenshots go to SHOTS.
//
// node on_call.mjs ADDRESS SHOTS

import { chromium } from 'playwright-core';

const [address, shots] = process.argv.slice(2);
const base = `http://${address}`;

function check(condition, what) {
  if (!condition) {
    throw new Error(`check failed: ${what}`);
  }
}

async function text(page) {
  return (await page.locator('main').innerText()).replace(/\s+/g, ' ');
}

/// Reloads `path` until its text holds `wanted` (the consumer applies within a second).
async function until(page, path, wanted, seconds = 15) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    await page.goto(base + path);
    const seen = await text(page);
    if (seen.includes(wanted)) {
      return seen;
    }
    if (Date.now() > deadline) {
      throw new Error(`${path} never showed "${wanted}"; it shows: ${seen}`);
    }
    await page.waitForTimeout(200);
  }
}

/// Every visible form field has a label (the console is used with a keyboard too).
async function labelled(page) {
  const unlabelled = await page.$$eval(
    'input:not([type=hidden]), textarea, select',
    (fields) => fields.filter((f) => !f.closest('label')).length,
  );
  check(unlabelled === 0, `${unlabelled} form fields without a label on ${page.url()}`);
}

/// Opens the dead letter of `stream` from the dead-letter list.
async function openEntry(page, stream) {
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Dead letters' }).click();
  const row = page.locator('tbody tr', { hasText: stream });
  await row.getByRole('link', { name: /^#\d+$/ }).click();
  return page.url();
}

async function replay(page, reason, body) {
  const form = page.locator('form[action$="/replay"]');
  await form.getByLabel('Reason for the replay (kept with the action)').fill(reason);
  await form.getByLabel(/Corrected event/).fill(body);
  await form.getByRole('button', { name: 'Replay' }).click();
  const result = await text(page);
  check(result.includes('done') && result.includes('requeued'), `replay: ${result}`);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: [
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-component-update',
    '--no-first-run',
    '--disable-sync',
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1366, height: 860 } });

  // The overview says what is wrong; the skip link is the first stop of the keyboard.
  const overview = await until(page, '/', '2 dead letters');
  check(overview.includes('missing version 2'), `overview: ${overview}`);
  await page.screenshot({ path: `${shots}/overview.png`, fullPage: true });
  await page.keyboard.press('Tab');
  check(
    (await page.evaluate(() => document.activeElement.textContent)) === 'Skip to the content',
    'the skip link comes first',
  );
  await labelled(page);

  // A dry run of the whole queue first: both entries would be refused again as they are.
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Dead letters' }).click();
  await labelled(page);
  await page.getByRole('button', { name: /Dry run of all 2 entries/ }).click();
  const dryRun = await text(page);
  check(
    (dryRun.match(/dead-lettered-again/g) || []).length === 2,
    `dry run of the queue: ${dryRun}`,
  );
  await labelled(page);
  await page.screenshot({ path: `${shots}/dry-run.png`, fullPage: true });

  // The poison deposit: the dry run says it fails as it is; a corrected event goes.
  await openEntry(page, 'account-1');
  let entry = await text(page);
  check(entry.includes('would be dead-lettered again'), `dry run: ${entry}`);
  await labelled(page);
  await page.screenshot({ path: `${shots}/dead-letter.png`, fullPage: true });
  await replay(
    page,
    'amount sent as text by the teller app',
    '{"id":"l2-fixed","stream":"account-1","version":2,"type":"Deposited","op":"incr","data":{"balance":100}}',
  );

  // The lost version, from the Waiting page to the stream, passed over with a reason.
  await page.getByRole('navigation', { name: 'Pages' }).getByRole('link', { name: 'Waiting' }).click();
  await page.screenshot({ path: `${shots}/waiting.png`, fullPage: true });
  await page.getByRole('link', { name: 'account-2', exact: true }).first().click();
  await page.getByLabel('Reason it is known lost (kept with the action)').fill('lost in the outage');
  await page.getByRole('button', { name: 'Pass over missing version 2' }).click();
  check((await text(page)).includes('done'), 'parked skip done');

  // The merge without its cut, replaced by one with it.
  await openEntry(page, 'customer-4');
  entry = await text(page);
  check(entry.includes('merge has no cut for source'), `merge entry: ${entry}`);
  await replay(
    page,
    'the merge service forgot the cut',
    '{"id":"m2-fixed","stream":"customer-4","version":2,"type":"CustomersMerged","op":"merge","data":{"from":["customer-3"]},"after":[{"stream":"customer-3","version":1}]}',
  );

  // Everything converges while the consumer runs.
  await until(page, '/streams/account-1', 'Applied version 3');
  await page.screenshot({ path: `${shots}/stream.png`, fullPage: true });
  await until(page, '/streams/account-2', 'Applied version 3');
  await until(page, '/streams/customer-4', 'Applied version 2');
  await until(page, '/streams/customer-3', 'Merged into');
  await until(page, '/', '0 dead letters');

  // A stream held while someone looks at it, then let go, from the keyboard-reachable
  // forms of the stream page and the overview.
  await page.goto(`${base}/streams/customer-4`);
  await page.getByLabel(/Reason for the pause/).fill('INC-7: checking the merged orders');
  await page.getByRole('button', { name: 'Pause this stream' }).click();
  check((await text(page)).includes(': paused ('), 'pause done');
  await until(page, '/', '1 paused');
  await page.screenshot({ path: `${shots}/paused.png`, fullPage: true });
  await page.getByLabel('Reason for the resume (kept with the action)').fill('orders checked');
  await page.getByRole('button', { name: 'Resume' }).click();
  check((await text(page)).includes(': resumed ('), 'resume done');

  // The journal holds each action with its reason.
  await page.goto(`${base}/journal`);
  await page.getByLabel('Kind').selectOption('operator');
  await page.getByRole('button', { name: 'Filter' }).click();
  const journal = await text(page);
  for (const reason of [
    'amount sent as text by the teller app',
    'lost in the outage',
    'the merge service forgot the cut',
    'INC-7: checking the merged orders',
    'orders checked',
  ]) {
    check(journal.includes(reason), `journal lacks "${reason}": ${journal}`);
  }
  await page.screenshot({ path: `${shots}/journal.png`, fullPage: true });

  // A form on another origin cannot act: refused, and nothing changed.
  const foreign = await browser.newPage();
  await foreign.setContent(
    `<form method="post" action="${base}/streams/product-1/skip-missing">` +
      '<input name="csrf" value="guess"><input name="version" value="1">' +
      '<input name="reason" value="forged"><button>go</button></form>',
  );
  const [answer] = await Promise.all([
    foreign.waitForNavigation(),
    foreign.getByRole('button', { name: 'go' }).click(),
  ]);
  check(answer.status() === 403, `a foreign form got ${answer.status()}`);
  console.log('on-call scenario: ok');
} finally {
  await browser.close();
}
