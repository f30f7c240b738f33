// The official provider (@openfeature/flagd-provider) in either mode, and a recorder of
// the events its OpenFeature client sees.
import { OpenFeature, ProviderEvents } from '@openfeature/server-sdk';
import { FlagdProvider } from '@openfeature/flagd-provider';
import { waitFor, now, CONTEXTS, ENV } from './fixture.mjs';

export const MODES = ['in-process', 'rpc'];

/**
 * A provider for `mode` against `flagd`, the SDK key given as the channel's authority
 * (the JavaScript provider has no option to add call metadata; flagd reads a key from
 * `:authority`).
 */
export function makeProvider(mode, flagd, secret, options = {}) {
  return new FlagdProvider({
    host: '127.0.0.1',
    port: flagd.grpcPort,
    resolverType: mode,
    defaultAuthority: secret,
    deadlineMs: 5000,
    // After a stream error the provider waits this long before it connects again.
    retryBackoffMaxMs: 1000,
    retryGracePeriod: 2,
    ...options,
  });
}

/** Every event of one OpenFeature client, with the time it was seen. */
export class Recorder {
  constructor(client) {
    this.client = client;
    this.events = [];
    this.handlers = [];
    for (const type of ['Ready', 'Error', 'Stale', 'ConfigurationChanged']) {
      const h = (details) =>
        this.events.push({ type, at: now(), flagsChanged: details?.flagsChanged ? [...details.flagsChanged] : undefined, message: details?.message, details });
      client.addHandler(ProviderEvents[type], h);
      this.handlers.push([ProviderEvents[type], h]);
    }
  }

  /** The index the next event will have: wait for events after it. */
  mark() {
    return this.events.length;
  }

  /** The first event from index `from` that satisfies `pred`. */
  async next(what, pred, { from = 0, ms = 20000 } = {}) {
    return waitFor(what, () => this.events.slice(from).find(pred), { ms, every: 2 });
  }

  /** A ConfigurationChanged naming `key`, from index `from`. */
  async changed(key, from, ms) {
    return this.next(`a ConfigurationChanged event naming ${key}`, (e) => e.type === 'ConfigurationChanged' && e.flagsChanged?.includes(key), { from, ms });
  }

  summary(from = 0) {
    return this.events
      .slice(from)
      .map((e) => `${e.type}${e.flagsChanged ? `[${e.flagsChanged.join(',')}]` : ''}${e.message ? `(${e.message})` : ''}`)
      .join(' ');
  }

  detach() {
    for (const [t, h] of this.handlers) this.client.removeHandler(t, h);
  }
}

/** setProviderAndWait in its own domain; the client and its recorder. */
export async function connect(domain, provider) {
  const client = OpenFeature.getClient(domain);
  const recorder = new Recorder(client);
  await OpenFeature.setProviderAndWait(domain, provider);
  return { client, recorder, provider };
}

/** Evaluations the kill switch and revert tests look at. */
export const CTX = CONTEXTS[0];

/** OFREP's metadata without `flagSetVersion`: what an in-process provider reports. */
export function withoutVersion(metadata) {
  const { flagSetVersion: _, ...rest } = metadata ?? {};
  return rest;
}

/**
 * The evaluation metadata `mode` reports for an OFREP answer `ref`: in-process, the set's
 * and the flag's metadata only (flagd keeps `flagSetVersion` out of the synced set's
 * metadata); RPC, OFREP's metadata with `flagSetVersion`.
 */
export function expectedMetadata(mode, ref) {
  return mode === 'in-process' ? withoutVersion(ref.metadata) : ref.metadata;
}

/**
 * The provider evaluates the fixture's own flag set: the flags the change tests alter
 * have their fixture answers again (the version is not visible in-process, so the values
 * tell). RPC answers carry `flagSetVersion`, which must be `head` as well.
 */
async function atFixture(client, mode, head) {
  const toggle = await client.getBooleanDetails('toggle-flag', false, CTX);
  const staticFlag = await client.getBooleanDetails('bool-static', false);
  const ref = await client.getStringDetails('ref-flag', 'none', CTX);
  const added = await client.getStringDetails('added-flag', 'none');
  const targeted = await client.getBooleanDetails('bool-targeted', false, CTX);
  return (
    toggle.value === true && toggle.reason === 'TARGETING_MATCH' &&
    staticFlag.value === true && ['STATIC', 'CACHED'].includes(staticFlag.reason) &&
    ref.value === 'staff-view' && ref.reason === 'TARGETING_MATCH' &&
    added.errorCode === 'FLAG_NOT_FOUND' &&
    targeted.value === true && targeted.reason === 'TARGETING_MATCH' &&
    (mode === 'in-process' ? !('flagSetVersion' in targeted.flagMetadata) : targeted.flagMetadata.flagSetVersion === head)
  );
}

/**
 * Puts the fixture's flag set back (a test that failed half-way may have left a flag
 * disabled) and waits until the provider evaluates it.
 */
export async function reset(fx, client, mode) {
  if (!MODES.includes(mode)) throw new Error(`reset: unknown mode ${mode}`);
  await fx.flagd.loadFlags();
  const head = Number((await fx.flagd.api('GET', `/environments/${ENV}/flags`)).headers.get('x-flag-set-version'));
  await waitFor(`the provider (${mode}) to evaluate the fixture's set (version ${head})`, () => atFixture(client, mode, head));
  return head;
}
