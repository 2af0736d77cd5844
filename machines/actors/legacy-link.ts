import fs from 'node:fs/promises';
import path from 'node:path';
import { fromCallback } from 'xstate';
import { FerryError } from '../../transport/errors.js';
import {
  LEGACY_EXIT_COMMAND,
  LEGACY_FILE_COMMAND,
  LegacyClientDecoder,
  encodeLegacyFileHeader,
  encodeLegacyMessage,
  legacyNameFits,
} from '../../transport/legacy-codec.js';
import type { Transport } from '../../transport/transport.js';
import { describeNetworkError } from '../../transport/network-errors.js';
import type { ClientLinkCommand, ClientLinkEvent, ClientLinkInput, ClientLinkResources } from './client-link.js';
import { readFailure, streamFile } from './file-source.js';

/** The original server reads `file` with one recv(1024): the header must arrive in a later segment. */
const FILE_COMMAND_PAUSE_MS = 50;

type Expected = { kind: 'echo' | 'ack'; id: number; answered(): void };

/**
 * The client's end of a connection to an original server. It speaks to the client machine with
 * the same events as the native link: the original server has no handshake (so `link.up` follows
 * the TCP connect), no upload acceptance (so it is implied), and answers in order (so replies are
 * matched to what was sent first-in, first-out).
 */
export const legacyLink = ({ dial }: Pick<ClientLinkResources, 'dial'>) => fromCallback<ClientLinkCommand, ClientLinkInput, ClientLinkEvent>(({ input, sendBack, receive }) => {
  const dialing = new AbortController();
  const decoder = new LegacyClientDecoder();
  const expected: Expected[] = [];
  let transport: Transport | undefined;
  let down = false;
  let closing = false;
  let upload: { id: number; path: string; name: string; size: number; abort: AbortController } | undefined;

  const goDown = (error: FerryError) => {
    if (down) return;
    down = true;
    upload?.abort.abort(error);
    transport?.destroy();
    sendBack({ type: 'link.down', error, jitter: Math.random() });
  };

  // The original server handles one command at a time and reads each with a single recv(), so
  // every command waits for the previous one's reply before it is written.
  let turn: Promise<void> = Promise.resolve();
  const inTurn = (step: () => Promise<void>) => {
    turn = turn.then(step, step);
  };
  const replied = (entry: Omit<Expected, 'answered'>) =>
    new Promise<void>((resolve) => {
      expected.push({ ...entry, answered: resolve });
    });

  const onReply = (text: string) => {
    const next = expected.shift();
    if (!next) return goDown(new FerryError('E_BAD_FRAME', 'The original server sent a reply nobody asked for.'));
    if (next.kind === 'ack' && text !== 'ACK') {
      return goDown(new FerryError('E_BAD_FRAME', `The original server answered an upload with "${text}" instead of ACK.`));
    }
    next.answered();
    if (next.kind === 'echo') sendBack({ type: 'server.ack', acks: [{ id: next.id, text }] });
  };

  dial(dialing.signal).then(
    (t) => {
      if (down) return t.destroy();
      transport = t;
      t.on('data', (chunk) => {
        if (down) return;
        let replies: string[];
        try {
          replies = decoder.feed(chunk);
        } catch (err) {
          return goDown(err instanceof FerryError ? err : describeNetworkError(err));
        }
        for (const text of replies) if (!down) onReply(text);
      });
      t.on('error', (err) => goDown(describeNetworkError(err)));
      t.on('close', () => goDown(new FerryError(closing ? 'E_CLOSED' : 'E_CONNECTION_LOST', closing ? 'The connection was closed.' : 'The original server closed the connection.')));
      sendBack({
        type: 'link.up',
        welcome: { version: 0, agent: 'original', session: 'original', maxMessage: input.limits.maxMessage, maxFrame: input.limits.maxFrame },
      });
    },
    (err: unknown) => goDown(describeNetworkError(err)),
  );

  const offer = async (id: number, filePath: string, requested: string) => {
    const name = requested || path.basename(filePath);
    if (!legacyNameFits(name)) {
      sendBack({
        type: 'upload.unreadable',
        id,
        error: new FerryError('E_LEGACY_NAME', `The name "${name}" is too long for the original format, which carries at most 20 bytes; rename the file to a shorter name and send it again.`),
      });
      return;
    }
    let size: number;
    try {
      const stat = await fs.stat(filePath);
      if (!stat.isFile()) throw new Error('not a regular file');
      size = stat.size;
    } catch (err) {
      sendBack({ type: 'upload.unreadable', id, error: new FerryError('E_LOCAL_FILE', `${filePath} cannot be read (${(err as Error).message}); check the path.`) });
      return;
    }
    if (size === 0) {
      // The original server stores an empty file but never answers it: the upload would wait forever.
      sendBack({
        type: 'upload.unreadable',
        id,
        error: new FerryError('E_LEGACY_EMPTY', `${filePath} is empty, and an original server never acknowledges an empty file; send it to a ferry server instead.`),
      });
      return;
    }
    if (down) return;
    upload = { id, path: filePath, name, size, abort: new AbortController() };
    sendBack({ type: 'upload.offered', id, size });
    // The original server never accepts or refuses: it simply reads.
    sendBack({ type: 'server.accept', id, offset: 0 });
  };

  const stream = async (id: number) => {
    const current = upload;
    const t = transport;
    if (!current || current.id !== id || !t || down) return;
    const acknowledged = replied({ kind: 'ack', id });
    try {
      t.write(LEGACY_FILE_COMMAND);
      await new Promise((resolve) => setTimeout(resolve, FILE_COMMAND_PAUSE_MS));
      if (current.abort.signal.aborted) return;
      t.write(encodeLegacyFileHeader(current.size, current.name));
      const { sha256 } = await streamFile({
        path: current.path,
        id,
        size: current.size,
        transport: t,
        signal: current.abort.signal,
        framing: 'raw',
        onProgress: (sent) => sendBack({ type: 'upload.progress', id, sent, total: current.size }),
        ...(input.rateLimit ? { rateLimit: input.rateLimit } : {}),
      });
      sendBack({ type: 'upload.sent', id, sha256 });
      // The ACK may overtake the end of our own read; the result needs both.
      await acknowledged;
      if (!down) sendBack({ type: 'server.done', result: { id, savedAs: current.name, bytes: current.size, sha256 } });
    } catch (err) {
      if (current.abort.signal.aborted) return;
      const { error, reset } = readFailure(err);
      sendBack({ type: 'upload.unreadable', id, error });
      goDown(reset);
    }
  };

  receive((command) => {
    if (down) return;
    switch (command.type) {
      case 'send-messages':
        for (const { id, text } of command.messages) {
          inTurn(async () => {
            if (down || !transport) return;
            const echoed = replied({ kind: 'echo', id });
            transport.write(encodeLegacyMessage(text));
            await echoed;
          });
        }
        break;
      case 'offer-upload':
        if (command.open) {
          sendBack({
            type: 'upload.unreadable',
            id: command.id,
            error: new FerryError('E_OPEN_DISABLED', 'The original format cannot ask the server to open a file (an original server opens images and media by itself); leave out --open.'),
          });
        } else {
          void offer(command.id, command.path, command.name);
        }
        break;
      case 'send-open':
        sendBack({
          type: 'server.opened',
          id: command.id,
          result: { opened: false, code: 'E_OPEN_DISABLED', message: 'The original format cannot ask the server to open a file; use a ferry server.' },
        });
        break;
      case 'stream-upload': {
        const { id } = command;
        inTurn(() => stream(id));
        break;
      }
      case 'close': {
        const sayExit = command.sayExit === true;
        inTurn(async () => {
          closing = true;
          if (transport && !transport.destroyed && !down) {
            if (sayExit) transport.write(LEGACY_EXIT_COMMAND);
            transport.end();
          } else {
            goDown(new FerryError('E_CLOSED', 'The client was closed.'));
          }
        });
        break;
      }
    }
  });

  return () => {
    down = true;
    dialing.abort();
    upload?.abort.abort(new FerryError('E_CLOSED', 'The client was closed.'));
    transport?.destroy();
  };
});
