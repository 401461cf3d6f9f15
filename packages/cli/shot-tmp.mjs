import { chromium } from 'playwright-core';
const [url, out, y, h] = process.argv.slice(2);
const b = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
const p = await b.newPage({ viewport: { width: 1100, height: 900 } });
await p.goto(url);
await p.click('#expand');
await p.screenshot({ path: out, fullPage: true, clip: { x: 0, y: +y, width: 1100, height: +h } });
await b.close();
