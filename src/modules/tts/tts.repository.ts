import { eq } from 'drizzle-orm';
import type { Db } from '../../db/index.js';
import { ttsAbbreviations } from '../../db/schema/index.js';

export type AbbreviationRow = typeof ttsAbbreviations.$inferSelect;

export class TtsRepository {
  constructor(private readonly db: Db) {}

  list(): AbbreviationRow[] {
    return this.db.select().from(ttsAbbreviations).all();
  }

  get(abbreviation: string): AbbreviationRow | undefined {
    return this.db
      .select()
      .from(ttsAbbreviations)
      .where(eq(ttsAbbreviations.abbreviation, abbreviation))
      .get();
  }

  upsert(row: AbbreviationRow): AbbreviationRow {
    return this.db
      .insert(ttsAbbreviations)
      .values(row)
      .onConflictDoUpdate({
        target: ttsAbbreviations.abbreviation,
        set: { expansion: row.expansion, updatedBy: row.updatedBy, updatedAt: row.updatedAt },
      })
      .returning()
      .get();
  }

  delete(abbreviation: string): boolean {
    return (
      this.db.delete(ttsAbbreviations).where(eq(ttsAbbreviations.abbreviation, abbreviation)).run().changes >
      0
    );
  }
}
