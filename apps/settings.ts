import fs from 'node:fs';
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
