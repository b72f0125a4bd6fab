// What the check scripts of this folder share: reading their options, and printing their checks as
// the Rust tests read them — one line per check, `ok - <name>` or `not ok - <name>: <why>`, then the
// summary line `N passed, M failed` — with the exit code 0 when every check passed, 1 when any
// failed, 2 on bad arguments, and a watchdog that ends the script at a hard time limit.

import { parseArgs } from "node:util";

// The options `spec` (as node:util's parseArgs takes them) of `script`, whose usage line is
// `usage`; exits with code 2 and the reason when they do not parse or one of `required` is missing.
// `integers` names options that must be positive integers: they come back as numbers.
export function options(script, usage, spec, { required = [], integers = [] } = {}) {
  const refuse = (message) => {
    process.stderr.write(`${script}: ${message}\n`);
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  };
  let values;
  try {
    ({ values } = parseArgs({ options: spec }));
  } catch (err) {
    refuse(err.message);
  }
  for (const name of required) {
    if (values[name] === undefined) refuse(`--${name} is required`);
  }
  for (const name of integers) {
    const n = Number(values[name]);
    if (!Number.isInteger(n) || n < 1) refuse(`--${name} must be a positive integer`);
    values[name] = n;
  }
  return values;
}

// A run of checks. With `chained`, a failed check makes the later ones fail without running (they
// depend on it), so the output always has the same lines. `cleanup` (synchronous) runs before the
// process exits, at the end or when the watchdog fires after `hardLimitMs`.
export function checks({ hardLimitMs, chained = false, cleanup = () => {} }) {
  let passed = 0;
  let failed = 0;
  let blocker = null;
  const exit = (code) => {
    cleanup();
    process.stdout.write(`${passed} passed, ${failed} failed\n`);
    process.exit(code);
  };
  setTimeout(() => {
    process.stdout.write(`not ok - checks finished within ${hardLimitMs} ms: hard time limit reached\n`);
    failed += 1;
    exit(1);
  }, hardLimitMs).unref();
  return {
    async check(name, fn) {
      if (blocker) {
        failed += 1;
        process.stdout.write(`not ok - ${name}: skipped after "${blocker}" failed\n`);
        return;
      }
      try {
        await fn();
        passed += 1;
        process.stdout.write(`ok - ${name}\n`);
      } catch (err) {
        failed += 1;
        if (chained) blocker = name;
        process.stdout.write(`not ok - ${name}: ${String(err?.message ?? err).split("\n")[0]}\n`);
      }
    },
    // Prints the summary and exits.
    finish() {
      exit(failed > 0 ? 1 : 0);
    },
  };
}
