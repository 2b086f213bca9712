// Service plugins only (world `service`): hand a message to the agent.
//
//   import { emit } from "../vendor/kata-sdk/emitter.js";
//   emit(message({ id: "reminder-1", conversation: "reminders", sender: "me", text: "stretch" }));

import emitter from "kata:plugin/emitter@0.1.2";
import { message } from "./index.js";

/** Put a message into kata's inbox (deduplicated on its id); throws an Error when kata cannot store it. */
export function emit(m) {
  try {
    emitter.emit(message(m));
  } catch (e) {
    const text = e instanceof Error && e.payload !== undefined ? e.payload : e instanceof Error ? e.message : e;
    throw new Error(`cannot emit ${m.id}: ${typeof text === "string" ? text : JSON.stringify(text)}`);
  }
}
