/**
 * A sort key that orders Vietnamese names the way people expect (Đông after Dương, before Tây) with a
 * plain byte comparison, so SQLite can sort and paginate by it with an index. SQLite's own ordering is
 * by code point, which puts every name starting with Đ after Z. Base letters decide first; the exact
 * name (with tone marks) breaks ties.
 */
export function sortKey(name: string): string {
  const base = name
    .normalize('NFD')
    .replace(/[\u0300-\u036f]/g, '')
    .replace(/đ/g, 'd')
    .replace(/Đ/g, 'D')
    .toLowerCase();
  return `${base}\u0000${name}`;
}
