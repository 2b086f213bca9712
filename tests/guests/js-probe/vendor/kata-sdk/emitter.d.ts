// Types of emitter.js (service plugins only).
import type { MessageInit } from "./index.js";

/** Put a message into kata's inbox (deduplicated on its id); throws an Error when kata cannot store it. */
export function emit(message: MessageInit): void;
