export * from './areas.js';
export * from './users.js';
export * from './devices.js';
export * from './commands.js';
export * from './audit.js';
export * from './health.js';
export * from './programmes.js';
export * from './schedules.js';
