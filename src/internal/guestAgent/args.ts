/**
 * The QEMU command line of a guest agent channel: a virtio-serial port named
 * `org.qemu.guest_agent.0` (the name qemu-ga opens by default) backed by a
 * unix socket chardev that QEMU listens on and the client connects to.
 */

/** The virtio-serial port name qemu-ga looks for. */
export const PORT_NAME = "org.qemu.guest_agent.0"

/** The chardev id used by {@link guestAgentArgs}. */
export const CHARDEV_ID = "qga0"

/**
 * The port's device id: QEMU reports `VSERPORT_CHANGE { id, open }` only for
 * a port that has one (the agent opening or closing its end).
 */
export const PORT_ID = "qga0-port"

/**
 * `-chardev socket,path=P,server=on,wait=off,id=qga0 -device virtio-serial-pci
 * -device virtserialport,chardev=qga0,name=org.qemu.guest_agent.0,id=qga0-port`.
 * A comma in the path is doubled, as QEMU's option syntax wants.
 */
export const guestAgentArgs = (socketPath: string): Array<string> => [
  "-chardev",
  `socket,path=${socketPath.replace(/,/g, ",,")},server=on,wait=off,id=${CHARDEV_ID}`,
  "-device",
  "virtio-serial-pci",
  "-device",
  `virtserialport,chardev=${CHARDEV_ID},name=${PORT_NAME},id=${PORT_ID}`
]
