// CRC-32 (IEEE 802.3, the polynomial of zlib.crc32 and of OKX's book checksum), unsigned.
// The browser has no CRC in its standard library (CompressionStream's gzip hides it), and
// a 256-entry table is a few lines, so no dependency for it.

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n += 1) {
    let c = n;
    for (let k = 0; k < 8; k += 1) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

const encoder = new TextEncoder();

/** CRC-32 of `bytes` (a Uint8Array), as an unsigned 32-bit integer. */
export function crc32Bytes(bytes) {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i += 1) crc = TABLE[(crc ^ bytes[i]) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** CRC-32 of the UTF-8 encoding of `text`, unsigned (Python's zlib.crc32(text.encode())). */
export function crc32(text) {
  return crc32Bytes(encoder.encode(text));
}
