"""What a site build did: counts, sizes, times and warnings, printed as a short summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SiteReport:
    """What a build did; `print(report)` gives a short summary."""

    out_dir: Path
    models: list[str] = field(default_factory=list)
    classes: int = 0
    pages_written: int = 0
    pages_unchanged: int = 0
    images_encoded: int = 0
    images_linked: int = 0  # copied into the site from the encoding cache
    images_unchanged: int = 0  # already in the site
    files_removed: int = 0  # stale pages and images of an earlier build
    links_removed: int = 0  # symbolic links found under the site or the cache (removed, never followed)
    sources_hashed: int = 0
    placeholders: int = 0  # parts shown as missing or failed
    shell_built: bool = False  # False: MkDocs skipped, its inputs had not changed
    largest_page: str = ""
    largest_page_bytes: int = 0
    index_bytes: int = 0
    search_index_bytes: int = 0
    atlas_written: int = 0  # concept pages, maps and the compare page written (changed)
    largest_class_json_bytes: int = 0
    largest_map_bytes: int = 0
    relations_recomputed: list[str] = field(default_factory=list)  # models whose global relations were recomputed
    dictionaries: list[str] = field(default_factory=list)  # models whose shared concept dictionary has pages
    dictionary_written: int = 0  # atom pages, maps and map data written (changed)
    dictionary_unchanged: int = 0  # atom pages kept as they were
    largest_dictionary_map_bytes: int = 0
    atoms_without_maco: int = 0  # shown shared concepts without a MACO: not rendered yet, or beyond `dictionary.visualize`
    up_to_date: bool = False  # inputs and site as the last build left them: nothing was done
    files_checked: int = 0  # store and site files whose size and mtime were compared with the last build's
    seconds: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # "model class: detail" behind each placeholder

    def __str__(self) -> str:
        kb = 1024
        if self.up_to_date:
            return (f"site: {self.out_dir}\n  up to date: nothing changed since the last build "
                    f"({self.files_checked} files checked in {self.seconds.get('total', 0):.1f} s)")
        lines = [
            f"site: {self.out_dir}",
            f"  {self.classes} classes x {len(self.models)} models ({', '.join(self.models) or 'none'})",
            f"  class pages: {self.pages_written} written, {self.pages_unchanged} unchanged;"
            f" largest {self.largest_page_bytes / kb:.1f} KB ({self.largest_page or '-'})",
            f"  images: {self.images_encoded} encoded, {self.images_linked} placed from cache,"
            f" {self.images_unchanged} unchanged; {self.files_removed} stale files removed",
            f"  placeholders for missing or failed parts: {self.placeholders}",
            f"  filter index {self.index_bytes / kb:.1f} KB, search index {self.search_index_bytes / kb:.1f} KB,"
            f" shell {'rebuilt' if self.shell_built else 'unchanged'}",
            f"  atlas: {self.atlas_written} files written; largest class relations {self.largest_class_json_bytes / kb:.1f} KB,"
            f" largest map {self.largest_map_bytes / kb:.1f} KB; relations recomputed for"
            f" {', '.join(self.relations_recomputed) or 'no model (cached)'}",
            *([f"  dictionary: {', '.join(self.dictionaries)}; {self.dictionary_written} files written, "
               f"{self.dictionary_unchanged} pages unchanged; largest map {self.largest_dictionary_map_bytes / kb:.1f} KB; "
               f"{self.atoms_without_maco} shown concepts without a MACO (not rendered yet, or beyond `dictionary.visualize`)"]
              if self.dictionaries else []),
            "  time: " + ", ".join(f"{k} {v:.2f} s" for k, v in self.seconds.items()),
        ]
        if self.links_removed:
            lines.append(f"  {self.links_removed} symbolic links under the site or its cache removed (never followed)")
        lines += [f"  problem: {p}" for p in self.problems[:20]]
        if len(self.problems) > 20:
            lines.append(f"  ... and {len(self.problems) - 20} more problems (`lens status` lists the failed parts)")
        lines += [f"  warning: {w}" for w in self.warnings[:20]]
        if len(self.warnings) > 20:
            lines.append(f"  ... and {len(self.warnings) - 20} more warnings")
        return "\n".join(lines)
