-- reloptions_map() (0003) parsed reloptions into text values, a second parser
-- beside reloptions_json(); profile_diff() now uses reloptions_json(), the one
-- parser, so the other goes.
DROP FUNCTION qmaint.reloptions_map(text[]);
