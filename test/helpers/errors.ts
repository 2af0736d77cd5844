/**
 * Catching what a call throws or a promise rejects with, so a test can look at the error; each
 * fails the test when nothing was thrown.
 */
import { expect } from 'vitest';
import { FerryError, ProtocolError, type ErrorCode } from '../../transport/errors.js';

/** Runs `fn` and returns what it threw; fails the test if it did not throw. */
export function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected a throw, got none');
}

/** What `promise` rejects with; fails the test if it resolves. */
export async function rejected(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

/** The FerryError `fn` throws; fails the test if it throws nothing or something else. */
export function thrown(fn: () => unknown): FerryError {
  const err = caught(fn);
  expect(err).toBeInstanceOf(FerryError);
  return err as FerryError;
}

/** The FerryError `promise` rejects with; fails the test if it resolves or rejects with something else. */
export async function rejection(promise: Promise<unknown>): Promise<FerryError> {
  const err = await rejected(promise);
  expect(err).toBeInstanceOf(FerryError);
  return err as FerryError;
}

/** Checks that `err` is a ProtocolError with `code`, and returns it. */
export function expectProtocolError(err: unknown, code: ErrorCode): ProtocolError {
  expect(err).toBeInstanceOf(ProtocolError);
  expect((err as ProtocolError).code).toBe(code);
  return err as ProtocolError;
}
