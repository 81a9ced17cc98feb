CREATE TABLE `alerts` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`device_id` text NOT NULL,
	`kind` text NOT NULL,
	`state` text NOT NULL,
	`reasons` text NOT NULL,
	`opened_at` integer NOT NULL,
	`resolved_at` integer,
	`acknowledged_at` integer,
	`acknowledged_by` text,
	`note` text
);
--> statement-breakpoint
CREATE INDEX `alerts_state_idx` ON `alerts` (`state`,`opened_at`);--> statement-breakpoint
CREATE INDEX `alerts_device_idx` ON `alerts` (`device_id`,`kind`,`state`);--> statement-breakpoint
CREATE TABLE `presence_transitions` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`device_id` text NOT NULL,
	`at` integer NOT NULL,
	`online` integer NOT NULL,
	`cause` text NOT NULL
);
--> statement-breakpoint
CREATE INDEX `presence_device_at_idx` ON `presence_transitions` (`device_id`,`at`);--> statement-breakpoint
CREATE TABLE `telemetry_samples` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`device_id` text NOT NULL,
	`at` integer NOT NULL,
	`device_at` integer NOT NULL,
	`uptime_s` real NOT NULL,
	`rssi_dbm` real,
	`supply_voltage` real,
	`on_battery` integer,
	`amp_temp_c` real,
	`speaker_fault` integer
);
--> statement-breakpoint
CREATE INDEX `telemetry_device_at_idx` ON `telemetry_samples` (`device_id`,`at`);--> statement-breakpoint
CREATE INDEX `telemetry_at_idx` ON `telemetry_samples` (`at`);--> statement-breakpoint
ALTER TABLE `devices` ADD `online_since` integer;--> statement-breakpoint
ALTER TABLE `devices` ADD `telemetry` text;--> statement-breakpoint
ALTER TABLE `devices` ADD `telemetry_at` integer;--> statement-breakpoint
ALTER TABLE `devices` ADD `playback_failures` integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE `devices` ADD `health` text DEFAULT 'fault' NOT NULL;--> statement-breakpoint
ALTER TABLE `devices` ADD `health_reasons` text DEFAULT '["offline"]' NOT NULL;--> statement-breakpoint
ALTER TABLE `devices` ADD `health_since` integer;--> statement-breakpoint
CREATE INDEX `devices_health_idx` ON `devices` (`health`);--> statement-breakpoint
CREATE INDEX `devices_last_seen_idx` ON `devices` (`last_seen_at`);