// End-to-end test of the QA console in headless Chromium (docs/CONSOLE.md §5).
// Run by .ci/run against `trailmark serve` on the demo's ledger:
//   TRAILMARK_URL=http://127.0.0.1:PORT TRAILMARK_USER=id TRAILMARK_PASSWORD=pw \
//   TRAILMARK_ADMIN_USER=id TRAILMARK_ADMIN_PASSWORD=pw SHOTS=dir node tests/browser/console.mjs
// The first user is a QA reviewer (trail, entry, lineage, review); the
// second an administrator (operations: the dead letter of the demo's
// Scenario 4 is replayed; administration).
// Exits non-zero on the first expectation that fails.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const base = process.env.TRAILMARK_URL;
const user = process.env.TRAILMARK_USER;
const password = process.env.TRAILMARK_PASSWORD;
const adminUser = process.env.TRAILMARK_ADMIN_USER;
const adminPassword = process.env.TRAILMARK_ADMIN_PASSWORD;
const shots = process.env.SHOTS || 'browser-shots';
if (!base || !user || !password || !adminUser || !adminPassword) {
  console.error('set TRAILMARK_URL, TRAILMARK_USER, TRAILMARK_PASSWORD, TRAILMARK_ADMIN_USER and TRAILMARK_ADMIN_PASSWORD');
  process.exit(2);
}
mkdirSync(shots, { recursive: true });

function expect(condition, what) {
  if (!condition) {
    throw new Error(`expected: ${what}`);
  }
  console.log(`ok: ${what}`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });
const text = () => page.locator('main').innerText();

try {
  // Log in: a wrong password is refused, the right one lands on the trail.
  await page.goto(`${base}/console/trail`);
  expect(page.url().endsWith('/console/login'), 'an anonymous visitor is sent to the log-in page');
  await shot('01-login');
  await page.getByLabel('User ID').fill(user);
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: 'Log in' }).click();
  expect((await page.getByRole('alert').innerText()).length > 0, 'a wrong password is refused with a message');
  await page.getByLabel('User ID').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Log in' }).click();
  expect(page.url().endsWith('/console/trail'), 'the right password opens the audit trail');

  // Filter the trail to the CAPA.
  await page.getByLabel('Subject').fill('qms:capa/CAPA-2026-031');
  await page.getByRole('button', { name: 'Filter' }).click();
  const rows = page.locator('tbody tr');
  expect(await rows.count() > 3, 'the filtered trail lists the CAPA\'s entries');
  expect((await text()).includes('qms.capa.closed'), 'the closure is among them');
  await shot('02-trail-filtered');
  // Free text anywhere in the entry, with a kind.
  await page.getByLabel('Subject').fill('');
  await page.getByLabel('Kind').fill('integration.capa.closure_refused');
  await page.getByLabel('Text in the entry').fill('capa-2026-031');
  await page.getByRole('button', { name: 'Filter' }).click();
  expect(await rows.count() >= 1 && (await text()).includes('integration.capa.closure_refused'),
    'free text (any case) with a kind finds the refused closure');
  await page.getByLabel('Kind').fill('');
  await page.getByLabel('Text in the entry').fill('');
  await page.getByLabel('Subject').fill('qms:capa/CAPA-2026-031');
  await page.getByRole('button', { name: 'Filter' }).click();

  // Open the closure: signatures with name, meaning and time; proof verified.
  const closed = rows.filter({ hasText: 'qms.capa.closed' }).first();
  await closed.getByRole('link').first().click();
  const entry = await text();
  expect(/Entry \d+/.test(entry), 'the entry page opens');
  expect(entry.includes('Reviewed') && entry.includes('Approved'), 'it shows the reviewed and approved signatures');
  expect(entry.includes('Verified against the signed checkpoint'), 'its inclusion proof is verified in the server');
  await shot('03-entry');

  // Walk the CAPA's lineage.
  await page.getByRole('link', { name: 'lineage' }).click();
  const lineage = await text();
  expect(lineage.includes('integration.capa.closure_refused') && lineage.includes('lms.completion.recorded'),
    'the lineage runs from the training action through the refused closure to the completions');
  expect(lineage.includes('Closure readiness') && lineage.includes('Ready'), 'the CAPA\'s lineage shows its closure readiness');
  expect(lineage.includes('delivered'), 'and the delivery outcomes of its hand-overs');
  expect(await page.locator('figure.graph svg circle').count() > 3, 'with a graph of the derivations');
  await shot('04-lineage');

  // Review by exception: a wrong password records nothing; the right one signs.
  await page.getByRole('link', { name: 'Review' }).click();
  const queue = await text();
  expect(queue.includes('need a look'), 'the review queue shows what needs a look');
  expect(queue.includes('Training completed late') && queue.includes('Training overdue'),
    'late and missing training are among the exceptions (the demo\'s E1017 and E1023)');
  await shot('05-review');
  // The training scope: only people, assignments and completions, with its own place.
  await page.getByLabel('Scope').selectOption('training');
  await page.getByRole('button', { name: 'Show the queue' }).click();
  const training = await text();
  expect(training.includes('Training: people, assignments, completions') && training.includes('Training overdue')
    && !training.includes('Administrative change'), 'the training scope keeps its exceptions and leaves out the others');
  await page.locator('select[name^="mark_"]').first().selectOption('follow-up');
  await page.getByLabel('User ID').fill(user);
  await page.getByLabel('Password').fill('not-the-password');
  await page.getByRole('button', { name: /Sign the review/ }).click();
  expect((await page.getByRole('alert').innerText()).includes('password is wrong'), 'a wrong password is refused');
  await page.getByLabel('User ID').fill(user);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: /Sign the review/ }).click();
  const review = await text();
  expect(review.includes('review.audit_trail.completed'), 'the review is recorded');
  expect(review.includes(', Reviewed,'), 'and signed `reviewed`');
  expect(review.includes('"mark": "follow-up"'), 'with the item marked for follow-up');
  await shot('06-review-signed');

  // Log out.
  await page.getByRole('button', { name: 'Log out' }).click();
  expect(page.url().endsWith('/console/login'), 'log-out ends the session');
  await page.goto(`${base}/console/trail`);
  expect(page.url().endsWith('/console/login'), 'the trail needs a new log-in');

  // Operations, as an administrator: health, SLA, and the dead letter.
  await page.getByLabel('User ID').fill(adminUser);
  await page.getByLabel('Password').fill(adminPassword);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.getByRole('link', { name: 'Operations' }).click();
  const ops = await text();
  expect(ops.includes('Last signed checkpoint') && ops.includes('Hand-over SLA'), 'the operations page shows ledger health and the SLA');
  expect(ops.includes('lms.assignment.created'), 'the demo\'s dead-lettered assignment is listed');
  await shot('07-operations');
  const replay = page.locator('form.replay').first();
  await replay.getByLabel('Reason').fill('LMS back after the maintenance window (CI)');
  await replay.getByLabel('User ID').fill(adminUser);
  await replay.getByLabel('Password').fill('not-the-password');
  await replay.getByRole('button', { name: 'Replay' }).click();
  expect((await page.getByRole('alert').innerText()).includes('password is wrong'), 'a replay with a wrong password is refused');
  const again = page.locator('form.replay').first();
  expect(await again.getByLabel('Reason').inputValue() === 'LMS back after the maintenance window (CI)', 'the reason is kept after the refusal');
  await again.getByLabel('User ID').fill(adminUser);
  await again.getByLabel('Password').fill(adminPassword);
  await again.getByRole('button', { name: 'Replay' }).click();
  const replayed = await page.getByRole('status').first().innerText();
  expect(replayed.includes('Replayed'), 'the right password replays the dead letter');
  await shot('08-replayed');
  await page.getByRole('status').first().getByRole('link').click();
  const replayEntry = await text();
  expect(replayEntry.includes('integration.handover.replayed') && replayEntry.includes('LMS back after the maintenance window (CI)'),
    'the replay is an entry with its reason');

  // Administration: users, tokens and the role matrix.
  await page.getByRole('link', { name: 'Administration' }).click();
  const admin = await text();
  expect(admin.includes('Users') && admin.includes('API tokens') && admin.includes('Roles and permissions'), 'the administration page lists users, tokens and roles');
  await shot('09-administration');
  console.log(`screenshots in ${shots}`);
} catch (e) {
  await shot('failure').catch(() => {});
  console.error(e.message);
  await browser.close();
  process.exit(1);
}
await browser.close();
