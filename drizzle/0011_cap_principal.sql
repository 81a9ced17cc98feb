DROP INDEX `cap_messages_identity_idx`;--> statement-breakpoint
ALTER TABLE `cap_messages` ADD `principal` text DEFAULT '' NOT NULL;--> statement-breakpoint
CREATE UNIQUE INDEX `cap_messages_identity_idx` ON `cap_messages` (`sender`,`identifier`,`principal`);