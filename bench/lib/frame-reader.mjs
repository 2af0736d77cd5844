// The bench clients' reader of what a native ferry server sends: the 8-byte preamble is skipped,
// then each whole frame is handed to onFrame(type, payload) as it completes; onFrame returning false
// stops reading this chunk (the caller has given up on the connection). No reference to a large
// chunk is kept once it is read, so an idle connection holds nothing.
const PREAMBLE = 8;
const HEADER = 5;

export function serverFrames(onFrame) {
  let buffered = Buffer.alloc(0);
  let skip = PREAMBLE;
  return (chunk) => {
    buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
    if (skip > 0) {
      const n = Math.min(skip, buffered.length);
      skip -= n;
      buffered = buffered.subarray(n);
    }
    while (skip === 0 && buffered.length >= HEADER) {
      const type = buffered[0];
      const length = buffered.readUInt32BE(1);
      if (buffered.length < HEADER + length) break;
      const payload = buffered.subarray(HEADER, HEADER + length);
      buffered = buffered.subarray(HEADER + length);
      if (onFrame(type, payload) === false) return;
    }
    if (buffered.length === 0) buffered = Buffer.alloc(0);
  };
}
