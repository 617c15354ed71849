// AML encoder and resource descriptors, checked byte for byte against iasl 20200925 output for
// the same ASL (the ASL is in each test's comment; the hex strings were produced by `iasl -tc`).
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TshvError } from '../../base/errors.js';
import {
  buffer, concat, device, eisaId, integer, method, name, namePath, nameSeg, pkg, pkgLength, ret, scope, string,
} from './aml.js';
import { dwordMemory, interrupt, io, irqNoFlags, memory32Fixed, qwordMemory, resourceTemplate } from './resources.js';

const h = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const ascii = (s: string): string => Buffer.from(s, 'latin1').toString('hex');

/** Decode a PkgLength independently of the encoder (ACPI 6.5, 20.2.4). */
function decodePkgLength(b: Uint8Array): { value: number; size: number } {
  const lead = b[0]!;
  const follow = lead >> 6;
  if (follow === 0) return { value: lead & 0x3f, size: 1 };
  let v = lead & 0x0f;
  for (let i = 1; i <= follow; i++) v += b[i]! * 2 ** (4 + 8 * (i - 1));
  return { value: v, size: 1 + follow };
}

describe('AML encoder', () => {
  it('integer_eachWidth_matchesIasl', () => {
    // Name (\INT0, 0) ... Name (\INTQ, 0x123456789ABCDEF0)
    assert.equal(h(name('\\INT0', integer(0))), '085c494e543000');
    assert.equal(h(name('\\INT1', integer(1))), '085c494e543101');
    assert.equal(h(name('\\INTB', integer(0xfe))), '085c494e54420afe');
    assert.equal(h(name('\\INTW', integer(0x1234))), '085c494e54570b3412');
    assert.equal(h(name('\\INTD', integer(0x12345678))), '085c494e54440c78563412');
    assert.equal(h(name('\\INTQ', integer(0x123456789abcdef0n))), '085c494e54510ef0debc9a78563412');
  });

  it('stringAndPackage_matchIasl', () => {
    // Name (\STR1, "VMBus"); Name (\PKG1, Package () { One, "ab", 0x1000 })
    assert.equal(h(name('\\STR1', string('VMBus'))), '085c535452310d564d42757300');
    assert.equal(h(name('\\PKG1', pkg([integer(1), string('ab'), integer(0x1000)]))), '085c504b4731120a03010d6162000b0010');
  });

  it('methodSerialized_matchesIasl', () => {
    // Method (\_SB.MTH1, 0, Serialized) { Return (0x0F) }
    assert.equal(h(method('\\_SB.MTH1', 0, true, [ret(integer(0x0f))])), '140f5c2e5f53425f4d54483108a40a0f');
  });

  it('namePaths_rootDualMultiParent_matchIasl', () => {
    // Scope (\_SB) { Device (PARN) { Device (CHLD) { Name (DEEP, 2) } } }
    assert.equal(h(scope('\\_SB', [device('PARN', [device('CHLD', [name('DEEP', integer(2))])])])),
      '101b5c5f53425f5b82135041524e5b820c43484c4408444545500a02');
    // Name (\_SB.PARN.CHLD.DEP2, 4)
    assert.equal(h(name('\\_SB.PARN.CHLD.DEP2', integer(4))), '085c2f045f53425f5041524e43484c44444550320a04');
    // Scope (\_SB.PARN) { Name (^ABC, 3) }
    assert.equal(h(scope('\\_SB.PARN', [name('^ABC', integer(3))])), '10135c2e5f53425f5041524e085e4142435f0a03');
    assert.equal(h(namePath('\\')), '5c00');
  });

  it('resourceTemplate_allDescriptorKinds_matchIasl', () => {
    // Name (\RES1, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xFEC00000, 0x1000, )
    //   Memory32Fixed (ReadOnly, 0xFED00000, 0x400, )
    //   DWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
    //     0, 0xF8000000, 0xFBFFFFFF, 0, 0x04000000, ...)
    //   QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite,
    //     0, 0x1000000000, 0x1FFFFFFFFF, 0, 0x1000000000, ...)
    //   Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {5}
    //   Interrupt (ResourceConsumer, Level, ActiveLow, Shared, ,, ) {16, 17} })
    const res = resourceTemplate([
      memory32Fixed(0xfec00000, 0x1000, true),
      memory32Fixed(0xfed00000, 0x400, false),
      dwordMemory({ min: 0xf8000000, max: 0xfbffffff, length: 0x04000000 }),
      qwordMemory({ min: 0x1000000000n, max: 0x1fffffffffn, length: 0x1000000000n, producer: true, caching: 'Cacheable' }),
      interrupt({ gsis: [5] }),
      interrupt({ gsis: [16, 17], level: true, activeLow: true, shared: true }),
    ]);
    assert.equal(h(name('\\RES1', res)),
      '085c52455331114c070a78860900010000c0fe00100000860900000000d0fe00040000871700000d0100000000000000f8fffffffb00000000000000048a2b00000c0300000000000000000000000010000000ffffffff1f00000000000000000000000000000010000000890600030105000000890a000d0210000000110000007900');
  });

  it('ioAndIrq_com1_matchIasl', () => {
    // IO (Decode16, 0x03F8, 0x03F8, 0x08, 0x08, ) IRQNoFlags () {4}
    assert.equal(h(resourceTemplate([io(0x3f8, 0x3f8, 8, 8), irqNoFlags([4])])), '11100a0d4701f803f803080822100079' + '00');
  });

  it('eisaId_knownIds', () => {
    assert.equal(eisaId('PNP0501'), 0x0105d041);
    assert.equal(eisaId('PNP0303'), 0x0303d041);
    assert.equal(eisaId('PNP0A03'), 0x030ad041);
  });

  it('pkgLength_boundaries_roundTrip', () => {
    for (const n of [0, 62, 63, 64, 4093, 4094, 4095, 1048572, 1048573, 0x0ffffff0]) {
      const enc = pkgLength(n);
      const d = decodePkgLength(enc);
      assert.equal(d.size, enc.length);
      assert.equal(d.value, n + enc.length, `payload ${n}`);
    }
    assert.equal(pkgLength(62).length, 1);
    assert.equal(pkgLength(63).length, 2);
    assert.throws(() => pkgLength(0x0ffffffc), TshvError);
  });

  it('pkgLength_property_decodesToPayloadPlusOwnSize', () => {
    fc.assert(fc.property(fc.integer({ min: 0, max: 0x0ffffff0 }), (n) => {
      const enc = pkgLength(n);
      const d = decodePkgLength(enc);
      return d.size === enc.length && d.value === n + enc.length && d.value <= 0x0fffffff;
    }));
  });

  it('buffer_largePayload_usesMultiBytePkgLength', () => {
    const b = buffer(new Uint8Array(5000));
    assert.equal(b[0], 0x11);
    const d = decodePkgLength(b.subarray(1));
    assert.equal(d.value, b.length - 1);
    assert.equal(h(b.subarray(1 + d.size, 1 + d.size + 3)), '0b8813');   // WordPrefix 5000
  });

  it('invalidInputs_throwTshvError', () => {
    assert.throws(() => nameSeg(''), TshvError);
    assert.throws(() => nameSeg('ABCDE'), TshvError);
    assert.throws(() => nameSeg('1ABC'), TshvError);
    assert.throws(() => nameSeg('ab'), TshvError);
    assert.throws(() => namePath(''), TshvError);
    assert.throws(() => namePath('\\_SB..X'), TshvError);
    assert.throws(() => integer(-1), TshvError);
    assert.throws(() => integer(1n << 64n), TshvError);
    assert.throws(() => integer(0.5), TshvError);
    assert.throws(() => string('caf\u00e9'), TshvError);
    assert.throws(() => string('a\u0000b'), TshvError);
    assert.throws(() => method('M', 8, false, []), TshvError);
    assert.throws(() => pkg(new Array<Uint8Array>(256).fill(integer(0))), TshvError);
    assert.throws(() => eisaId('pnp0501'), TshvError);
    assert.throws(() => irqNoFlags([16]), TshvError);
    assert.throws(() => io(0x400, 0x3ff, 1, 1), TshvError);
    assert.throws(() => dwordMemory({ min: 0, max: 0xfff, length: 0x2000 }), TshvError);
    assert.throws(() => memory32Fixed(0xfffff000, 0x2000), TshvError);
    assert.throws(() => interrupt({ gsis: [] }), TshvError);
  });

  it('nameSeg_padsWithUnderscore', () => {
    assert.equal(h(nameSeg('_SB')), ascii('_SB_'));
    assert.equal(h(concat([nameSeg('A'), nameSeg('AB12')])), ascii('A___AB12'));
  });
});
