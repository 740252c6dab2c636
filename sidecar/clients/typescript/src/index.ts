/**
 * Client for the Lockstep sidecar's socket API.
 *
 *     import { Client } from "@lockstep/client";
 *     const client = new Client(); // $LOCKSTEP_SOCKET, else /run/lockstep/sidecar.sock
 *     const { token } = await client.jwtSign("jwt", { sub: "alice" }, { ttl: 300 });
 */

export * from "./client.js";
export * from "./errors.js";
export * from "./keyset.js";
export * from "./middleware.js";

/** This client's version, the project's. */
export const VERSION = "0.1.0";
