/** A TCP proxy on loopback whose server-to-client direction can be frozen without closing anything. */
import { once } from 'node:events';
import net from 'node:net';

export class FreezingProxy {
  /** One entry a connection, oldest first; set `holdDown` to swallow the server's bytes on it. */
  readonly links: { client: net.Socket; upstream: net.Socket; holdDown: boolean }[] = [];
  private readonly server: net.Server;
  private readonly open = new Set<net.Socket>();

  constructor(target: number) {
    this.server = net.createServer((client) => {
      const upstream = net.connect({ host: '127.0.0.1', port: target });
      const link = { client, upstream, holdDown: false };
      this.links.push(link);
      for (const s of [client, upstream]) {
        this.open.add(s);
        s.on('error', () => {});
        s.on('close', () => this.open.delete(s));
      }
      client.on('data', (chunk: Buffer) => upstream.write(chunk));
      upstream.on('data', (chunk: Buffer) => {
        if (!link.holdDown) client.write(chunk);
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
  }

  async listen(): Promise<number> {
    this.server.listen(0, '127.0.0.1');
    await once(this.server, 'listening');
    return (this.server.address() as net.AddressInfo).port;
  }

  /** From now on the server's bytes on the newest connection are swallowed. */
  holdReplies(): void {
    this.links.at(-1)!.holdDown = true;
  }

  get connections(): number {
    return this.links.length;
  }

  close(): void {
    this.server.close();
    for (const s of this.open) s.destroy();
  }
}
