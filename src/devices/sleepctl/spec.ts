/**
 * ACPI hardware-reduced sleep and reset registers (wire only).
 *
 * Spec: ACPI 6.5, 4.8.3.7 Sleep Control and Status Registers
 * (https://uefi.org/specs/ACPI/6.5/04_ACPI_Hardware_Specification.html#sleep-control-and-status-registers)
 * and 4.8.3.6 Reset Register. Names as in Linux include/acpi/actbl.h (ACPI_X_*), which
 * drivers/acpi/acpica/hwesleep.c acpi_hw_extended_sleep uses: it writes ACPI_X_WAKE_STATUS to
 * the status register, then ((SLP_TYP << ACPI_X_SLEEP_TYPE_POSITION) & ACPI_X_SLEEP_TYPE_MASK)
 * | ACPI_X_SLEEP_ENABLE to the control register, then polls the status register for WAK_STS.
 */

/** Sleep Control Register: bits 2-4 SLP_TYPx, bit 5 SLP_EN (write-only); bits 0-1, 6-7 reserved. */
export const ACPI_X_SLEEP_TYPE_MASK = 0x1c;
export const ACPI_X_SLEEP_TYPE_POSITION = 2;
export const ACPI_X_SLEEP_ENABLE = 0x20;
/** Sleep Status Register: bit 7 WAK_STS (write 1 to clear); bits 0-6 reserved. */
export const ACPI_X_WAKE_STATUS = 0x80;

/**
 * The sleeping state a Sleep Control Register write asks for: its SLP_TYP (0-7) when SLP_EN is
 * set, -1 when it is not (a write without SLP_EN does nothing). Reserved bits and bits above
 * the byte are ignored. Pure, allocation-free.
 */
export function sleepRequest(value: number): number {
  if ((value & ACPI_X_SLEEP_ENABLE) === 0) return -1;
  return (value & ACPI_X_SLEEP_TYPE_MASK) >> ACPI_X_SLEEP_TYPE_POSITION;
}
