// The JobService client (generated from the proto by protoc-gen-es, spoken over Connect by connect-web),
// the caller's token (tab memory unless the person asks to remember it), and reading server errors.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { BadRequestSchema, ErrorInfoSchema } from "./gen/google/rpc/error_details_pb";
import { JobService } from "./gen/xcron/v1/job_service_pb";

const REMEMBER_KEY = "xcron.token";
let token: string | null = localStorage.getItem(REMEMBER_KEY);

export function setToken(value: string | null, remember = false): void {
  token = value;
  if (value !== null && remember) localStorage.setItem(REMEMBER_KEY, value);
  else localStorage.removeItem(REMEMBER_KEY);
}

export function hasToken(): boolean {
  return token !== null;
}

const bearer: Interceptor = (next) => async (req) => {
  if (token !== null) req.header.set("Authorization", `Bearer ${token}`);
  return await next(req);
};

export const client: Client<typeof JobService> = createClient(
  JobService,
  // Binary protobuf: a WatchJobs message with a thousand statuses decodes several times faster than JSON.
  createConnectTransport({ baseUrl: location.origin, interceptors: [bearer], useHttpGet: true, useBinaryFormat: true }),
);

export interface ServerError {
  code: Code;
  message: string;
  reason: string;
  /** BadRequest field violations: field path (e.g. "parameters.times") -> description. */
  fields: Map<string, string>;
}

export function readError(err: unknown): ServerError {
  const e = ConnectError.from(err);
  const fields = new Map<string, string>();
  for (const bad of e.findDetails(BadRequestSchema)) {
    for (const v of bad.fieldViolations) fields.set(v.field, v.description);
  }
  const info = e.findDetails(ErrorInfoSchema)[0];
  return { code: e.code, message: e.rawMessage, reason: info?.reason ?? "", fields };
}

export { Code };
