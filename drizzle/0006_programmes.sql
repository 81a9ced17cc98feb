CREATE TABLE `area_jingles` (
	`area_id` text PRIMARY KEY NOT NULL,
	`intro_media_id` text,
	`outro_media_id` text,
	`updated_by` text,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`area_id`) REFERENCES `areas`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`intro_media_id`) REFERENCES `media`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`outro_media_id`) REFERENCES `media`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`updated_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `area_jingles_intro_idx` ON `area_jingles` (`intro_media_id`);--> statement-breakpoint
CREATE INDEX `area_jingles_outro_idx` ON `area_jingles` (`outro_media_id`);--> statement-breakpoint
CREATE TABLE `media` (
	`id` text PRIMARY KEY NOT NULL,
	`area_id` text,
	`title` text NOT NULL,
	`title_search` text NOT NULL,
	`original_name` text,
	`format` text NOT NULL,
	`duration_ms` integer NOT NULL,
	`size_bytes` integer NOT NULL,
	`sha256` text NOT NULL,
	`loudness_lufs` real,
	`rendition_sha256` text NOT NULL,
	`rendition_size_bytes` integer NOT NULL,
	`rendition_duration_ms` integer NOT NULL,
	`rendition_loudness_lufs` real,
	`rendition_bitrate_kbps` integer NOT NULL,
	`rendition_target_lufs` real NOT NULL,
	`created_by` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`area_id`) REFERENCES `areas`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`created_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `media_area_idx` ON `media` (`area_id`,`created_at`);--> statement-breakpoint
CREATE INDEX `media_sha256_idx` ON `media` (`sha256`);--> statement-breakpoint
CREATE INDEX `media_rendition_idx` ON `media` (`rendition_sha256`);--> statement-breakpoint
CREATE TABLE `programme_events` (
	`id` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`programme_id` text NOT NULL,
	`revision_number` integer NOT NULL,
	`action` text NOT NULL,
	`actor_id` text,
	`actor_name` text NOT NULL,
	`note` text,
	`at` integer NOT NULL,
	FOREIGN KEY (`programme_id`) REFERENCES `programmes`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`actor_id`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `programme_events_programme_idx` ON `programme_events` (`programme_id`,`id`);--> statement-breakpoint
CREATE TABLE `programme_media` (
	`revision_id` text NOT NULL,
	`media_id` text NOT NULL,
	PRIMARY KEY(`revision_id`, `media_id`),
	FOREIGN KEY (`revision_id`) REFERENCES `programme_revisions`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`media_id`) REFERENCES `media`(`id`) ON UPDATE no action ON DELETE no action
);
--> statement-breakpoint
CREATE INDEX `programme_media_media_idx` ON `programme_media` (`media_id`);--> statement-breakpoint
CREATE TABLE `programme_revisions` (
	`id` text PRIMARY KEY NOT NULL,
	`programme_id` text NOT NULL,
	`number` integer NOT NULL,
	`title` text NOT NULL,
	`category` text NOT NULL,
	`content` text NOT NULL,
	`status` text NOT NULL,
	`rendition_sha256` text,
	`size_bytes` integer,
	`duration_ms` integer,
	`loudness_lufs` real,
	`relay_probe` text,
	`created_by` text,
	`created_at` integer NOT NULL,
	FOREIGN KEY (`programme_id`) REFERENCES `programmes`(`id`) ON UPDATE no action ON DELETE cascade,
	FOREIGN KEY (`created_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE UNIQUE INDEX `programme_revisions_number_idx` ON `programme_revisions` (`programme_id`,`number`);--> statement-breakpoint
CREATE TABLE `programmes` (
	`id` text PRIMARY KEY NOT NULL,
	`area_id` text NOT NULL,
	`kind` text NOT NULL,
	`title` text NOT NULL,
	`title_search` text NOT NULL,
	`category` text NOT NULL,
	`status` text NOT NULL,
	`current_revision_id` text NOT NULL,
	`approved_revision_id` text,
	`created_by` text,
	`created_at` integer NOT NULL,
	`updated_at` integer NOT NULL,
	`deleted_at` integer,
	FOREIGN KEY (`area_id`) REFERENCES `areas`(`id`) ON UPDATE no action ON DELETE no action,
	FOREIGN KEY (`created_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null
);
--> statement-breakpoint
CREATE INDEX `programmes_area_idx` ON `programmes` (`area_id`,`updated_at`);--> statement-breakpoint
CREATE INDEX `programmes_status_idx` ON `programmes` (`status`);--> statement-breakpoint
CREATE TABLE `tts_abbreviations` (
	`abbreviation` text PRIMARY KEY NOT NULL,
	`expansion` text NOT NULL,
	`updated_by` text,
	`updated_at` integer NOT NULL,
	FOREIGN KEY (`updated_by`) REFERENCES `users`(`id`) ON UPDATE no action ON DELETE set null,
	CONSTRAINT "tts_abbreviations_not_empty" CHECK(length("abbreviation") > 0 AND length("expansion") > 0)
);
--> statement-breakpoint
PRAGMA foreign_keys=OFF;--> statement-breakpoint
CREATE TABLE `__new_users` (
	`id` text PRIMARY KEY NOT NULL,
	`username` text NOT NULL,
	`display_name` text,
	`password_hash` text NOT NULL,
	`role` text NOT NULL,
	`area_id` text,
	`created_at` integer NOT NULL,
	`disabled_at` integer,
	FOREIGN KEY (`area_id`) REFERENCES `areas`(`id`) ON UPDATE no action ON DELETE no action,
	CONSTRAINT "users_role_check" CHECK("role" IN ('admin', 'district_operator', 'broadcaster', 'technician', 'approver')),
	CONSTRAINT "users_area_check" CHECK("role" = 'admin' OR "area_id" IS NOT NULL)
);
--> statement-breakpoint
INSERT INTO `__new_users`("id", "username", "display_name", "password_hash", "role", "area_id", "created_at", "disabled_at") SELECT "id", "username", "display_name", "password_hash", "role", "area_id", "created_at", "disabled_at" FROM `users`;--> statement-breakpoint
DROP TABLE `users`;--> statement-breakpoint
ALTER TABLE `__new_users` RENAME TO `users`;--> statement-breakpoint
PRAGMA foreign_keys=ON;--> statement-breakpoint
CREATE UNIQUE INDEX `users_username_unique` ON `users` (`username`);--> statement-breakpoint
CREATE INDEX `users_area_idx` ON `users` (`area_id`);--> statement-breakpoint
ALTER TABLE `commands` ADD `programme_id` text;--> statement-breakpoint
ALTER TABLE `commands` ADD `programme_revision_id` text;--> statement-breakpoint
CREATE INDEX `commands_programme_idx` ON `commands` (`programme_id`);