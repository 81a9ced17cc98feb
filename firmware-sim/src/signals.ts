/**
 * Resolves on the first SIGINT or SIGTERM. The listeners stay installed afterwards: under tsx one Ctrl-C
 * can arrive twice (the terminal signals the whole process group, and tsx relays it again when its child
 * does not confirm within 30 ms), and a signal nobody listens to would end the process before the devices
 * are closed. A signal more than a second after the first is a deliberate second Ctrl-C: exit at once.
 */
export function shutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    let firstAt: number | undefined;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (firstAt === undefined) {
        firstAt = Date.now();
        resolve(signal);
      } else if (Date.now() - firstAt > 1_000) {
        console.error(`${signal} again: exiting without closing`);
        process.exit(130);
      }
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}
