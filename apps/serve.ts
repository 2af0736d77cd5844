import path from 'node:path';
import { Option, type Command } from 'commander';
import { DEFAULT_HOST, DEFAULT_PORT } from '../transport/frames.js';
import fs from 'node:fs';
import { applyConfigFile, applySwitchesFromEnv, LOG_FORMATS, UsageError, type LogFormat } from './settings.js';
import { formatBytes, parseCount, parseDuration, parseDurationOrZero, parsePort, parseSize } from './units.js';

interface ServeOptions {
  host: string;
  port: number;
  uploadDir: string;
  config?: string;
  maxMessage: number;
  maxFileSize?: number;
  handshakeTimeout: number;
  grace: number;
  logLevel: string;
  logFormat: LogFormat;
  json?: boolean;
  legacy: boolean;
  open?: boolean;
  imageApp?: string;
  audioApp?: string;
  videoApp?: string;
  opensPerMinute: number;
  inspect?: string | true;
  heartbeat: number;
  idleTimeout: number;
  partialTtl: number;
  token?: string;
  allowLegacy?: boolean;
  insecure?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  maxConnections: number;
}

export function registerServe(program: Command): void {
  const command = program
    .command('serve')
    .description('Receive messages and files. Settings come from flags, then FERRY_* variables, then --config, then defaults.')
    .addOption(new Option('--host <address>', 'address to listen on').env('FERRY_HOST').default(DEFAULT_HOST))
    .addOption(new Option('--port <port>', 'port to listen on (0 picks a free one)').env('FERRY_PORT').argParser(parsePort).default(DEFAULT_PORT))
    .addOption(new Option('--upload-dir <dir>', 'where received files are saved').env('FERRY_UPLOAD_DIR').default('./upload'))
    .addOption(new Option('--config <file>', 'JSON file with any of these settings, e.g. {"port": 9098, "uploadDir": "/srv/in"}').env('FERRY_CONFIG'))
    .addOption(new Option('--max-message <size>', 'largest message accepted').env('FERRY_MAX_MESSAGE').argParser(parseSize).default(1024 * 1024, '1M'))
    .addOption(new Option('--max-file-size <size>', 'largest file accepted (default: what free disk space allows)').env('FERRY_MAX_FILE_SIZE').argParser(parseSize))
    .addOption(
      new Option('--handshake-timeout <duration>', 'close connections that have not said hello by then').env('FERRY_HANDSHAKE_TIMEOUT').argParser(parseDuration).default(10_000, '10s'),
    )
    .addOption(new Option('--grace <duration>', 'on SIGINT/SIGTERM, how long transfers in flight may finish').env('FERRY_GRACE').argParser(parseDuration).default(10_000, '10s'))
    .addOption(new Option('--open', 'let clients ask for received images, audio and video to be opened on this machine (or FERRY_OPEN=1)'))
    .addOption(new Option('--image-app <cmd>', 'command that opens images; {file} stands for the file (default: the desktop\u2019s default app)').env('FERRY_IMAGE_APP'))
    .addOption(new Option('--audio-app <cmd>', 'command that plays audio, e.g. "mpv --no-video {file}"').env('FERRY_AUDIO_APP'))
    .addOption(new Option('--video-app <cmd>', 'command that plays video, e.g. "vlc {file}"').env('FERRY_VIDEO_APP'))
    .addOption(new Option('--opens-per-minute <n>', 'apps one connection may launch per minute').env('FERRY_OPENS_PER_MINUTE').argParser(parseCount).default(10))
    .addOption(new Option('--heartbeat <duration>', 'ping clients this often; drop those silent for two intervals (0 = never)').env('FERRY_HEARTBEAT').argParser(parseDurationOrZero).default(10_000, '10s'))
    .addOption(new Option('--idle-timeout <duration>', 'close connections that send nothing for this long (0 = never)').env('FERRY_IDLE_TIMEOUT').argParser(parseDurationOrZero).default(600_000, '10m'))
    .addOption(new Option('--partial-ttl <duration>', 'delete partial uploads untouched this long').env('FERRY_PARTIAL_TTL').argParser(parseDuration).default(24 * 3600_000, '24h'))
    .addOption(new Option('--token <token>', 'clients must prove they hold this token (it never crosses the wire)').env('FERRY_TOKEN'))
    .addOption(new Option('--allow-legacy', 'with a token, still accept the original tool\u2019s clients (which cannot authenticate) (or FERRY_ALLOW_LEGACY=1)'))
    .addOption(new Option('--insecure', 'listen beyond loopback without a token, accepting the risk (or FERRY_INSECURE=1)'))
    .addOption(new Option('--tls-cert <file>', 'serve TLS with this PEM certificate (chain)').env('FERRY_TLS_CERT'))
    .addOption(new Option('--tls-key <file>', 'the PEM private key for --tls-cert').env('FERRY_TLS_KEY'))
    .addOption(new Option('--max-connections <n>', 'close new connections beyond this many').env('FERRY_MAX_CONNECTIONS').argParser(parseCount).default(1000))
    .addOption(new Option('--inspect [url]', 'stream the server\u2019s and every session\u2019s state machines to a ws:// inspector, or start a local inspector page'))
    .addOption(new Option('--no-legacy', 'refuse clients of the original tool (they are recognised from their first bytes)'))
    .addOption(new Option('--log-level <level>', 'fatal, error, warn, info, debug or trace').env('LOG_LEVEL').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .addOption(new Option('--log-format <format>', 'pretty (one line per event), json (JSON lines), or auto: pretty on a terminal, else json').env('FERRY_LOG_FORMAT').choices(LOG_FORMATS).default('auto'))
    .option('--json', 'log JSON lines even on a terminal (same as --log-format json)')
    .action(async (_opts, cmd: Command) => {
      applySwitchesFromEnv(cmd, { open: 'FERRY_OPEN', allowLegacy: 'FERRY_ALLOW_LEGACY', insecure: 'FERRY_INSECURE' });
      applyConfigFile(cmd, cmd.opts<ServeOptions>().config, {
        port: parsePort,
        maxMessage: parseSize,
        maxFileSize: parseSize,
        handshakeTimeout: parseDuration,
        grace: parseDuration,
        opensPerMinute: parseCount,
        heartbeat: parseDurationOrZero,
        idleTimeout: parseDurationOrZero,
        partialTtl: parseDuration,
        maxConnections: parseCount,
        logFormat: parseLogFormat,
      });
      await serve(cmd.opts<ServeOptions>());
    });
  command.addHelpText(
    'after',
    `
Environment: FERRY_HOST, FERRY_PORT, FERRY_UPLOAD_DIR, FERRY_CONFIG, FERRY_MAX_MESSAGE, FERRY_MAX_FILE_SIZE,
FERRY_HANDSHAKE_TIMEOUT, FERRY_GRACE, FERRY_OPEN, FERRY_IMAGE_APP, FERRY_AUDIO_APP, FERRY_VIDEO_APP,
FERRY_OPENS_PER_MINUTE, FERRY_HEARTBEAT, FERRY_IDLE_TIMEOUT, FERRY_PARTIAL_TTL, FERRY_TOKEN, FERRY_ALLOW_LEGACY, FERRY_INSECURE,
FERRY_TLS_CERT, FERRY_TLS_KEY, FERRY_MAX_CONNECTIONS, LOG_LEVEL, FERRY_LOG_FORMAT. A server that listens beyond loopback
(e.g. --host 0.0.0.0) needs --token, or --insecure to accept the risk. Sizes are written like 500K, 50M, 2G; durations like 500ms, 10s, 2m.
Logs go to stdout: one readable line per event on a terminal, JSON lines otherwise (or with --json).

Opening media: with --open, a client may ask for a file it sent (or one stored earlier) to be opened.
The kind is decided from the file's content, never its name. Each kind runs its command without a
shell; {file} is replaced by the stored file's absolute path, or the path is appended. Defaults:
xdg-open (Linux), open (macOS), Paint and Windows Media Player (Windows). Examples:
  ferry serve --open --image-app "feh --scale-down {file}" --audio-app "mpv --no-video"
  {"open": true, "videoApp": "vlc --fullscreen {file}"}   (in a --config file)`,
  );
}

async function serve(options: ServeOptions): Promise<void> {
  // Loaded here, not at the top: the CLI's other commands never need the server or its logger.
  const [{ createServer }, { createLogger }] = await Promise.all([import('../server.js'), import('./logger.js')]);
  const log = createLogger(options.logLevel, process.stdout, options.json ? 'json' : options.logFormat);
  if ((options.tlsCert === undefined) !== (options.tlsKey === undefined)) {
    throw new UsageError('TLS needs both --tls-cert and --tls-key.');
  }
  const tls = options.tlsCert && options.tlsKey ? { cert: readPem(options.tlsCert, '--tls-cert'), key: readPem(options.tlsKey, '--tls-key') } : undefined;
  const inspection = options.inspect === undefined ? undefined : await (await import('./inspect/start.js')).startInspection(options.inspect, options.token ? [options.token] : []);
  if (inspection) log.info({ event: 'inspecting', url: inspection.url }, inspection.description);
  const uploadDir = path.resolve(options.uploadDir);
  const server = createServer({
    host: options.host,
    port: options.port,
    uploadDir,
    maxMessage: options.maxMessage,
    ...(options.maxFileSize !== undefined ? { maxFileSize: options.maxFileSize } : {}),
    handshakeTimeoutMs: options.handshakeTimeout,
    graceMs: options.grace,
    logger: log,
    legacy: options.legacy,
    open: options.open === true,
    apps: {
      ...(options.imageApp ? { image: options.imageApp } : {}),
      ...(options.audioApp ? { audio: options.audioApp } : {}),
      ...(options.videoApp ? { video: options.videoApp } : {}),
    },
    opensPerMinute: options.opensPerMinute,
    heartbeatMs: options.heartbeat,
    idleTimeoutMs: options.idleTimeout,
    partialTtlMs: options.partialTtl,
    ...(options.token ? { token: options.token } : {}),
    allowLegacy: options.allowLegacy === true,
    insecure: options.insecure === true,
    ...(tls ? { tls } : {}),
    maxConnections: options.maxConnections,
    ...(inspection ? { inspect: inspection.inspect } : {}),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      log.warn({ event: 'forced-exit', signal }, 'second signal: exiting now');
      process.exit(130);
    }
    stopping = true;
    log.info({ event: 'signal', signal }, `${signal}: finishing transfers in flight (up to ${options.grace} ms), then stopping`);
    void server
      .close()
      .then(() => inspection?.stop())
      .then(() => process.exit(0));
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));

  const address = await server.listen();
  log.info(
    {
      event: 'ready',
      uploadDir,
      maxMessage: options.maxMessage,
      maxFileSize: options.maxFileSize ?? 'free space',
      auth: options.token ? 'token' : 'none',
      tls: tls !== undefined,
      open: options.open === true,
    },
    `ferry is listening on ${address.host}:${address.port}; files go to ${uploadDir}; messages up to ${formatBytes(options.maxMessage)}`,
  );
}

function parseLogFormat(value: string): LogFormat {
  if (!(LOG_FORMATS as readonly string[]).includes(value)) throw new Error(`"${value}" is not one of ${LOG_FORMATS.join(', ')}`);
  return value as LogFormat;
}

function readPem(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (err) {
    throw new UsageError(`${flag} ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`);
  }
}
