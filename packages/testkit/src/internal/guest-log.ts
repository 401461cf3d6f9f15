// Where the guest's printf lines (GUEST_PRINTF, UCALL_PRINTF) go: the kit hands every PRINTF ucall
// it decodes to the sink of the running case, so that reports show them under that case as
// kselftest's runner shows a test's output — whether or not the host code logs them itself.

let sink: ((line: string) => void) | undefined;

/** Routes guest printf lines to `next` (undefined: nowhere); returns a function restoring the previous sink. */
export function setGuestPrintfSink(next: ((line: string) => void) | undefined): () => void {
  const prev = sink;
  sink = next;
  return () => {
    sink = prev;
  };
}

/** Hands one guest printf message to the current sink, a line at a time (trailing newline dropped). */
export function emitGuestPrintf(message: string): void {
  if (!sink) return;
  for (const line of message.replace(/\n$/, '').split('\n')) sink(line);
}
