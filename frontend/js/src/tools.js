// Mouse tools of the stack viewport (cornerstone3D tools): window/level, zoom, pan and wheel scrolling.
// Imported after the first image is on screen, so the tools' code does not delay it.
import {
  Enums,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
  init,
  store,
} from '@cornerstonejs/tools';

const GROUP_ID = 'covidsite-stack';
const TOOLS = [StackScrollTool, WindowLevelTool, ZoomTool, PanTool];

export function activateTools(engineId, viewportId, element) {
  init();
  // The viewport was enabled before the tools existed: attach their event listeners to it now, as
  // the tools' own ELEMENT_ENABLED handler would have done.
  store.addEnabledElement({ detail: { element, viewportId } });
  TOOLS.forEach((tool) => addTool(tool));
  const { MouseBindings, KeyboardBindings } = Enums;
  const group = ToolGroupManager.createToolGroup(GROUP_ID);
  TOOLS.forEach((tool) => group.addTool(tool.toolName));
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  group.setToolActive(PanTool.toolName, {
    bindings: [
      { mouseButton: MouseBindings.Auxiliary },
      { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift },
    ],
  });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  group.addViewport(viewportId, engineId);
  return group;
}
