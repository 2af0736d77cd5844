import fs from 'node:fs';

/** How the server writes its log. `auto`: pretty on a terminal, JSON lines otherwise. */
export type LogFormat = 'auto' | 'pretty' | 'json';

export const LOG_FORMATS: readonly LogFormat[] = ['auto', 'pretty', 'json'];
import type { Command } from 'commander';

/**
 * Settings resolve in this order: command-line flag, then `FERRY_*` environment variable (both
 * handled by commander), then the JSON config file given with --config, then the built-in default.
 */
export function applyConfigFile(command: Command, configPath: string | undefined, parsers: Record<string, (value: string) => unknown>): void {
  if (!configPath) return;
  let config: unknown;
  try {
    config = JSON.parse(fs.readFileSync(configPath, 'utf8'));
  } catch (err) {
    throw new UsageError(`The config file ${configPath} cannot be read as JSON (${(err as Error).message}).`);
  }
  if (config === null || typeof config !== 'object' || Array.isArray(config)) {
    throw new UsageError(`The config file ${configPath} must hold a JSON object like {"port": 9098}.`);
  }
  const known = new Set(command.options.map((o) => o.attributeName()));
  for (const [key, value] of Object.entries(config)) {
    if (!known.has(key) || key === 'config') {
      throw new UsageError(`The config file ${configPath} has an unknown setting "${key}"; see \`ferry ${command.name()} --help\`.`);
    }
    const source = command.getOptionValueSource(key);
    if (source === 'cli' || source === 'env') continue;
    const parse = parsers[key];
    try {
      command.setOptionValueWithSource(key, parse && typeof value === 'string' ? parse(value) : value, 'config');
    } catch (err) {
      throw new UsageError(`The config file ${configPath} has a bad value for "${key}": ${(err as Error).message}.`);
    }
  }
}

/** A mistake in how ferry was invoked: reported in one sentence, exit status 2. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** `1`, `true`, `yes`, `on` → true; `0`, `false`, `no`, `off`, empty → false; anything else is a usage error. */
export function parseSwitch(name: string, value: string): boolean {
  const v = value.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['', '0', 'false', 'no', 'off'].includes(v)) return false;
  throw new UsageError(`${name}=${value} is neither on (1, true, yes) nor off (0, false, no).`);
}

/**
 * On/off flags read from the environment by value, not by presence, so `FERRY_OPEN=false` means
 * off. A flag on the command line wins; a config file only fills what neither set.
 */
export function applySwitchesFromEnv(command: Command, switches: Record<string, string>): void {
  for (const [key, name] of Object.entries(switches)) {
    const value = process.env[name];
    if (value === undefined || command.getOptionValueSource(key) === 'cli') continue;
    command.setOptionValueWithSource(key, parseSwitch(name, value), 'env');
  }
}
