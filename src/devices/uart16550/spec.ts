/**
 * 16550A UART register definitions (wire only).
 *
 * Names and bits as in the National Semiconductor PC16550D datasheet ("UART with FIFOs") and
 * Linux include/uapi/linux/serial_reg.h. Offsets are from the port base (COM1 0x3F8).
 */

// Register offsets. DLAB = LCR bit 7 selects DLL/DLM at offsets 0/1.
export const UART_RBR = 0;   // read, DLAB=0: Receiver Buffer Register
export const UART_THR = 0;   // write, DLAB=0: Transmitter Holding Register
export const UART_DLL = 0;   // DLAB=1: Divisor Latch (LS)
export const UART_IER = 1;   // DLAB=0: Interrupt Enable Register
export const UART_DLM = 1;   // DLAB=1: Divisor Latch (MS)
export const UART_IIR = 2;   // read: Interrupt Identification Register
export const UART_FCR = 2;   // write: FIFO Control Register
export const UART_LCR = 3;   // Line Control Register
export const UART_MCR = 4;   // Modem Control Register
export const UART_LSR = 5;   // Line Status Register
export const UART_MSR = 6;   // Modem Status Register
export const UART_SCR = 7;   // Scratch Register
export const UART_REGISTER_COUNT = 8;

// IER
export const IER_RDI = 0x01;    // ERBFI: received data available
export const IER_THRI = 0x02;   // ETBEI: transmitter holding register empty
export const IER_RLSI = 0x04;   // ELSI: receiver line status
export const IER_MSI = 0x08;    // EDSSI: modem status
export const IER_MASK = 0x0f;   // bits 4-7 read as 0 on a 16550A

// IIR (bit 0 set: no interrupt pending; bits 3:1 the source, highest priority first)
export const IIR_NO_INT = 0x01;
export const IIR_RLSI = 0x06;   // priority 1: receiver line status
export const IIR_RDI = 0x04;    // priority 2: received data available (trigger level reached)
export const IIR_RX_TIMEOUT = 0x0c; // priority 2: character timeout
export const IIR_THRI = 0x02;   // priority 3: THR empty
export const IIR_MSI = 0x00;    // priority 4: modem status
export const IIR_FIFO_ENABLED = 0xc0;

// FCR
export const FCR_ENABLE_FIFO = 0x01;
export const FCR_CLEAR_RCVR = 0x02;
export const FCR_CLEAR_XMIT = 0x04;
export const FCR_DMA_SELECT = 0x08;
export const FCR_TRIGGER_MASK = 0xc0;
/** Bits the FCR keeps (the clear bits self-clear; bits 4-5 are reserved on a 16550A). */
export const FCR_STORED_MASK = FCR_ENABLE_FIFO | FCR_DMA_SELECT | FCR_TRIGGER_MASK;
/** Receiver trigger levels by FCR bits 7:6. */
export const FCR_TRIGGER_LEVELS: readonly [number, number, number, number] = [1, 4, 8, 14];

// LCR
export const LCR_DLAB = 0x80;

// MCR
export const MCR_DTR = 0x01;
export const MCR_RTS = 0x02;
export const MCR_OUT1 = 0x04;
export const MCR_OUT2 = 0x08;
export const MCR_LOOP = 0x10;
export const MCR_MASK = 0x1f;   // bits 5-7 read as 0 on a 16550A

// LSR
export const LSR_DR = 0x01;     // data ready
export const LSR_OE = 0x02;     // overrun error
export const LSR_PE = 0x04;     // parity error
export const LSR_FE = 0x08;     // framing error
export const LSR_BI = 0x10;     // break interrupt
export const LSR_THRE = 0x20;   // THR (TX FIFO) empty
export const LSR_TEMT = 0x40;   // transmitter empty
export const LSR_FIFOE = 0x80;  // error in RCVR FIFO
export const LSR_ERROR_BITS = LSR_OE | LSR_PE | LSR_FE | LSR_BI;

// MSR
export const MSR_DCTS = 0x01;
export const MSR_DDSR = 0x02;
export const MSR_TERI = 0x04;
export const MSR_DDCD = 0x08;
export const MSR_CTS = 0x10;
export const MSR_DSR = 0x20;
export const MSR_RI = 0x40;
export const MSR_DCD = 0x80;
export const MSR_DELTA_MASK = 0x0f;

/** Depth of the 16550A receive and transmit FIFOs. */
export const UART_FIFO_SIZE = 16;
