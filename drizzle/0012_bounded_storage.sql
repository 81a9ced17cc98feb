CREATE TABLE `maintenance_marks` (
	`job` text PRIMARY KEY NOT NULL,
	`at` integer NOT NULL
);
--> statement-breakpoint
CREATE TABLE `telemetry_rollups` (
	`device_id` text NOT NULL,
	`bucket_at` integer NOT NULL,
	`samples` integer NOT NULL,
	`uptime_min_s` integer NOT NULL,
	`uptime_max_s` integer NOT NULL,
	`uptime_avg_s` integer NOT NULL,
	`rssi_n` integer NOT NULL,
	`rssi_min_ddbm` integer,
	`rssi_max_ddbm` integer,
	`rssi_avg_ddbm` integer,
	`supply_n` integer NOT NULL,
	`supply_min_mv` integer,
	`supply_max_mv` integer,
	`supply_avg_mv` integer,
	`amp_temp_n` integer NOT NULL,
	`amp_temp_min_dc` integer,
	`amp_temp_max_dc` integer,
	`amp_temp_avg_dc` integer,
	`on_battery_n` integer NOT NULL,
	`on_battery_true` integer NOT NULL,
	`speaker_fault_n` integer NOT NULL,
	`speaker_fault_true` integer NOT NULL,
	PRIMARY KEY(`device_id`, `bucket_at`)
) WITHOUT ROWID;
--> statement-breakpoint
CREATE TABLE `webhook_outbox` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`event` text NOT NULL,
	`created_at` integer NOT NULL,
	`state` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`next_attempt_at` integer NOT NULL,
	`last_error` text
);
--> statement-breakpoint
CREATE INDEX `webhook_outbox_state_idx` ON `webhook_outbox` (`state`,`id`);--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_telemetry_samples` (
	`device_id` text NOT NULL,
	`at` integer NOT NULL,
	`device_at` integer NOT NULL,
	`uptime_s` real NOT NULL,
	`rssi_dbm` real,
	`supply_voltage` real,
	`on_battery` integer,
	`amp_temp_c` real,
	`speaker_fault` integer,
	PRIMARY KEY(`device_id`, `at`)
) WITHOUT ROWID;
--> statement-breakpoint
INSERT OR IGNORE INTO `__new_telemetry_samples`("device_id", "at", "device_at", "uptime_s", "rssi_dbm", "supply_voltage", "on_battery", "amp_temp_c", "speaker_fault") SELECT "device_id", "at", "device_at", "uptime_s", "rssi_dbm", "supply_voltage", "on_battery", "amp_temp_c", "speaker_fault" FROM `telemetry_samples`;--> statement-breakpoint
DROP TABLE `telemetry_samples`;--> statement-breakpoint
ALTER TABLE `__new_telemetry_samples` RENAME TO `telemetry_samples`;--> statement-breakpoint
PRAGMA foreign_keys=ON;