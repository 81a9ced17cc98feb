/** @loa/firmware-sim: simulated Loa station and cluster firmware (device protocol v1). */
export {
  SimDevice,
  backoffDelay,
  sessionLengthMs,
  type PlaybackView,
  type CommandEvent,
  type DownloadEvent,
  type ReconnectEvent,
  type DeviceCounters,
  type Faults,
  type SimDeviceEvents,
  type SimDeviceOptions,
} from './device.js';
export { Fleet, type ConnectReport, type FleetEvents, type FleetOptions, type FleetStats } from './fleet.js';
export {
  ApiError,
  ProvisionError,
  createArea,
  createDevice,
  deviceExists,
  login,
  provisionDevices,
  type AreaLevel,
  type DeviceCredentials,
  type DeviceKind,
  type ProvisionOptions,
} from './api.js';
export {
  DownloadError,
  HashCache,
  downloadVerified,
  type DownloadFailure,
  type DownloadOptions,
  type DownloadResult,
} from './download.js';
export { describeCertificateError, fetchTrusting, readCaBundle } from './tls.js';
