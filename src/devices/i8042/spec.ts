/**
 * Intel 8042 keyboard controller and PS/2 keyboard definitions (wire only).
 *
 * Names as in Linux drivers/input/serio/i8042.h and drivers/input/keyboard/atkbd.c; behaviour
 * from the IBM PC/AT Technical Reference (keyboard controller chapter).
 */

export const I8042_DATA_PORT = 0x60;
export const I8042_COMMAND_PORT = 0x64;   // write: command; read: status register

// Status register (read at 0x64)
export const I8042_STR_OBF = 0x01;        // output buffer full
export const I8042_STR_IBF = 0x02;        // input buffer full
export const I8042_STR_SYSFLAG = 0x04;    // system flag (CTR bit 2)
export const I8042_STR_CMDDAT = 0x08;     // last write was to the command port
export const I8042_STR_KEYLOCK = 0x10;    // 1: keyboard not inhibited
export const I8042_STR_AUXDATA = 0x20;    // output buffer holds aux data
export const I8042_STR_TIMEOUT = 0x40;
export const I8042_STR_PARITY = 0x80;

// Controller command byte (CTR, controller RAM byte 0)
export const I8042_CTR_KBDINT = 0x01;
export const I8042_CTR_AUXINT = 0x02;
export const I8042_CTR_SYSFLAG = 0x04;
export const I8042_CTR_IGNKEYLOCK = 0x08;
export const I8042_CTR_KBDDIS = 0x10;
export const I8042_CTR_AUXDIS = 0x20;
export const I8042_CTR_XLATE = 0x40;
/** The command byte a BIOS leaves behind: translation, system flag, keyboard interrupt. */
export const I8042_CTR_DEFAULT = I8042_CTR_XLATE | I8042_CTR_SYSFLAG | I8042_CTR_KBDINT;

// Controller commands (written to 0x64)
export const I8042_CMD_CTL_RCTR = 0x20;   // 0x20-0x3F: read controller RAM byte
export const I8042_CMD_CTL_WCTR = 0x60;   // 0x60-0x7F: write controller RAM byte (one data byte)
export const I8042_CMD_AUX_DISABLE = 0xa7;
export const I8042_CMD_AUX_ENABLE = 0xa8;
export const I8042_CMD_AUX_TEST = 0xa9;
export const I8042_CMD_CTL_TEST = 0xaa;   // self test: replies 0x55
export const I8042_CMD_KBD_TEST = 0xab;   // keyboard interface test: replies 0x00
export const I8042_CMD_KBD_DISABLE = 0xad;
export const I8042_CMD_KBD_ENABLE = 0xae;
export const I8042_CMD_READ_INPUT = 0xc0;
export const I8042_CMD_READ_OUTPUT = 0xd0;
export const I8042_CMD_WRITE_OUTPUT = 0xd1;
export const I8042_CMD_KBD_LOOP = 0xd2;   // next data byte appears as if from the keyboard
export const I8042_CMD_AUX_LOOP = 0xd3;
export const I8042_CMD_AUX_SEND = 0xd4;
export const I8042_CMD_A20_DISABLE = 0xdd;
export const I8042_CMD_A20_ENABLE = 0xdf;
export const I8042_CMD_PULSE_FIRST = 0xf0;  // 0xF0-0xFF: pulse output port bits 3:0 that are 0
export const I8042_CMD_RESET = 0xfe;        // pulse bit 0: CPU reset

export const I8042_SELFTEST_OK = 0x55;
export const I8042_KBD_TEST_OK = 0x00;
export const I8042_AUX_TEST_CLOCK_HIGH = 0x02;   // aux interface test: clock line stuck high

// Output port (0xD0 / 0xD1)
export const I8042_OUT_RESET = 0x01;      // 0: system reset asserted
export const I8042_OUT_A20 = 0x02;
export const I8042_OUT_KBD_OBF = 0x10;    // IRQ1 (output buffer full from keyboard)
export const I8042_OUT_AUX_OBF = 0x20;    // IRQ12
export const I8042_OUT_DEFAULT = 0xcf;    // reset inactive, A20 on, clock/data lines high

// Keyboard commands and replies (atkbd)
export const ATKBD_CMD_SETLEDS = 0xed;
export const ATKBD_CMD_ECHO = 0xee;
export const ATKBD_CMD_SSCANSET = 0xf0;
export const ATKBD_CMD_GETID = 0xf2;
export const ATKBD_CMD_SETREP = 0xf3;
export const ATKBD_CMD_ENABLE = 0xf4;
export const ATKBD_CMD_RESET_DIS = 0xf5;
export const ATKBD_CMD_RESET_DEF = 0xf6;
export const ATKBD_CMD_RESEND = 0xfe;
export const ATKBD_CMD_RESET_BAT = 0xff;
export const ATKBD_RET_ACK = 0xfa;
export const ATKBD_RET_NAK = 0xfe;
export const ATKBD_RET_BAT = 0xaa;
export const ATKBD_RET_ECHO = 0xee;
export const ATKBD_ID_1 = 0xab;
export const ATKBD_ID_2 = 0x83;           // MF2 keyboard; 0x41 when the controller translates
export const ATKBD_ID_2_XLATE = 0x41;
