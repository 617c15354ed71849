/** Formatting helpers for addresses and register values in messages. */
export function hex(v: number | bigint, width = 0): string {
  const n = typeof v === 'bigint' ? (v < 0n ? v + (1n << 64n) : v) : v < 0 ? v >>> 0 : v;
  return '0x' + n.toString(16).padStart(width, '0');
}
