"""The four questions the shapes world asks (types 1 to 4): the only ones the shipped model was trained
on. Import-cheap, so that the command line's help can show them."""

QUESTION_FORMS = ("what color is the {shape}?", "what shape is the {color} object?", "where is the {color} {shape}?",
                  "how many objects are there?")
